"""The vote pages through HTTP (TestClient), on SQLite and PostgreSQL: a GET never votes, the form's POST does
once, and every link that names nothing gets the one bad-link answer."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from itsdangerous import URLSafeSerializer
from sqlalchemy import select
from sqlmodel import Session

from digest.claim.opening import open_issue
from digest.links import RECIPIENT_SALT, Signer
from digest.subscribers.subscriptions import forget
from digest.transports.base import fill
from digest.weekly import run
from storage.db import session_scope
from storage.models import Comparison, Delivery, Subscriber, SubscriberStatus, Tool, Vote, VoteEvent
from tests.factories import RecordingTransport, add_comparison, add_subscribers, build_sender, recipient_token
from tests.fixtures_web import web_settings

NOW = datetime(2026, 11, 26, 9, tzinfo=timezone.utc)  # issue 2026-W48 opens then
SLUG = "cellmind-vs-quill"


@dataclass
class Store:
    web: object
    readers: list[int]
    issue_id: int

    @property
    def engine(self):
        return self.web.app.state.ctx.engine

    def token(self, reader: int, with_delivery: bool = True) -> str:
        delivery = self.delivery_of(reader) if with_delivery else None
        return recipient_token(self.engine, self.web.app.state.ctx.signer, reader, delivery)

    def delivery_of(self, reader: int) -> int:
        with Session(self.engine) as session:
            return session.execute(select(Delivery.id).where(Delivery.subscriber_id == reader)).scalar_one()

    def link(self, reader: int, tool="1", choice="ship", slug=SLUG) -> str:
        return f"/v/{self.token(reader)}/{slug}/{tool}/{choice}"


@pytest.fixture
def store(web) -> Store:
    engine = web.app.state.ctx.engine
    add_comparison(engine, slug=SLUG, title="Cellmind vs Quill", published_at=NOW - timedelta(days=1))
    add_comparison(engine, slug="unsent", published_at=NOW + timedelta(days=3))  # no issue has carried it
    readers = add_subscribers(engine, 3)
    opened = open_issue(engine=engine, week="2026-W48", now=NOW)
    return Store(web=web, readers=readers, issue_id=opened.issue.id)


def votes(store: Store) -> list[Vote]:
    with Session(store.engine) as session:
        return list(session.execute(select(Vote)).scalars())


def vote_events(store: Store) -> list[VoteEvent]:
    with Session(store.engine) as session:
        return list(session.execute(select(VoteEvent).order_by(VoteEvent.id)).scalars())


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]{64})"', page).group(1)


def cast(web, path: str, choice: str):
    """What the page's button sends: GET the page (the CSRF cookie and field), then POST its form."""
    page = web.get(path)
    assert page.status_code == 200, page.text
    return web.post(path, data={"csrf": csrf_of(page.text), "vote": choice})


# -- the page ---------------------------------------------------------------------------------------------

def test_a_vote_link_shows_the_ballot_and_records_nothing(store):
    """GET a Ship link: the title, the tool, Ship ticked, the tally, one Cast my vote form; no vote, no event"""
    web, reader = store.web, store.readers[0]
    path = store.link(reader)

    page = web.get(path)

    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store" and page.headers["referrer-policy"] == "no-referrer"
    assert "Cellmind vs Quill" in page.text and 'href="https://verdicts.example.com/compare/cellmind-vs-quill"' in page.text
    assert re.search(r'value="ship" checked>', page.text) and re.search(r'value="skip">', page.text)
    assert re.search(rf'<form method="post" action="{re.escape(path)}">', page.text)
    assert page.text.count("<button") == 1 and ">Cast my vote</button>" in page.text
    assert "Readers of this newsletter: 0 ship / 0 skip" in page.text and "Your vote:" not in page.text
    assert votes(store) == [] and vote_events(store) == []


def test_scanners_get_and_head_every_vote_link_three_times_and_nothing_is_recorded(store):
    """a mail scanner GETs and HEADs both choices of both tools three times: every answer 200, nothing stored"""
    web, reader = store.web, store.readers[0]
    answers = [request(store.link(reader, tool, choice)).status_code
               for tool in ("1", "2") for choice in ("ship", "skip") for _ in range(3) for request in (web.get, web.head)]

    assert answers == [200] * 24
    assert votes(store) == [] and vote_events(store) == []


# -- casting ----------------------------------------------------------------------------------------------

def test_cast_again_and_change_one_standing_vote_two_events(store):
    """Cast Ship (recorded, for the link's issue), the same again (nothing), then Skip: one vote, the change an event"""
    web, reader, other = store.web, store.readers[0], store.readers[1]
    cast(web, store.link(other), "ship")
    path = store.link(reader)

    first = cast(web, path, "ship")
    assert first.status_code == 303 and first.headers["location"] == f"{path}?done=1"
    shown = web.get(first.headers["location"])
    assert "Your vote: Ship" in shown.text and "Readers of this newsletter: 2 ship / 0 skip" in shown.text
    assert [(v.subscriber_id, v.choice, v.issue_id) for v in votes(store) if v.subscriber_id == reader] == \
        [(reader, "ship", store.issue_id)]

    again = cast(web, path, "ship")
    assert again.status_code == 303 and len(vote_events(store)) == 2  # the other reader's and this one's

    changed = cast(web, path, "skip")  # on the Ship link: the form's radio decides
    assert changed.status_code == 303 and changed.headers["location"] == f"{path[:-4]}skip?done=1"
    shown = web.get(changed.headers["location"])
    assert "Your vote: Skip" in shown.text and "Readers of this newsletter: 1 ship / 1 skip" in shown.text
    assert re.search(r'value="skip" checked>', shown.text)
    assert [v.choice for v in votes(store) if v.subscriber_id == reader] == ["skip"]
    mine = vote_events(store)[1:]
    assert [(e.choice, e.replaces) for e in mine] == [("ship", None), ("skip", mine[0].id)]


def test_a_post_without_a_valid_csrf_field_is_refused_and_records_nothing(store):
    """no CSRF field, a wrong one, or no cookie: 403 and no vote"""
    web, path = store.web, store.link(store.readers[0])
    good = csrf_of(web.get(path).text)

    missing = web.post(path, data={"vote": "ship"})
    wrong = web.post(path, data={"vote": "ship", "csrf": "0" * 64})
    web.cookies.clear()
    no_cookie = web.post(path, data={"vote": "ship", "csrf": good})

    assert [r.status_code for r in (missing, wrong, no_cookie)] == [403, 403, 403]
    assert votes(store) == [] and vote_events(store) == []


def test_a_post_naming_no_choice_records_nothing(store):
    """no radio ticked, or a forged "maybe": the page again with 400, nothing cast"""
    web, path = store.web, store.link(store.readers[0])
    csrf = csrf_of(web.get(path).text)

    answers = [web.post(path, data={"csrf": csrf, **fields}) for fields in ({}, {"vote": "maybe"})]

    assert [a.status_code for a in answers] == [400, 400]
    assert "Choose Ship or Skip" in answers[0].text
    assert votes(store) == [] and vote_events(store) == []


# -- bad links and readers who cannot vote -----------------------------------------------------------------

def bad_paths(store: Store, reader: int) -> dict[str, str]:
    token = store.token(reader)
    altered = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    foreign = Signer("someone-elses-secret-key-0123456789").recipient_token(
        subscriber_id=reader, delivery_id=store.delivery_of(reader), tag=0)
    return {
        "bad token": f"/v/not-a-token/{SLUG}/1/ship",
        "altered token": f"/v/{altered}/{SLUG}/1/ship",
        "foreign key": f"/v/{foreign}/{SLUG}/1/ship",
        "unknown slug": f"/v/{token}/no-such-comparison/1/ship",
        "tool 0": f"/v/{token}/{SLUG}/0/ship",
        "tool 3": f"/v/{token}/{SLUG}/3/ship",
        "tool x": f"/v/{token}/{SLUG}/x/ship",
        "choice maybe": f"/v/{token}/{SLUG}/1/maybe",
        "unsent comparison": f"/v/{token}/unsent/1/ship",
    }


def test_every_link_naming_nothing_gets_the_one_bad_link_answer(store):
    """bad, altered or foreign tokens, unknown slug, tools 0/3/x, "maybe", an unsent comparison: the bad token's
    very bytes, on GET and on a POST with a good CSRF field, and nothing stored"""
    web, reader = store.web, store.readers[0]
    csrf = csrf_of(web.get(store.link(reader)).text)
    paths = bad_paths(store, reader)
    reference = web.get(paths["bad token"])
    assert reference.status_code == 404

    for name, path in paths.items():
        for answer in (web.get(path), web.post(path, data={"csrf": csrf, "vote": "ship"})):
            assert (answer.status_code, answer.content) == (404, reference.content), name
            assert answer.headers["cache-control"] == "no-store", name
    assert votes(store) == [] and vote_events(store) == []


@pytest.mark.parametrize("status, paused, says", [
    (SubscriberStatus.active, True, "Your subscription is paused, so votes are closed for you until it resumes"),
    (SubscriberStatus.unsubscribed, False, "You are unsubscribed, so votes are closed for you"),
    (SubscriberStatus.bounced, False, "We no longer send the newsletter to this address"),
])
def test_readers_we_do_not_write_to_cannot_vote(store, status, paused, says):
    """paused, unsubscribed or bounced: the page says why with the preferences link and no button; a POST casts nothing"""
    web, reader = store.web, store.readers[0]
    csrf = csrf_of(web.get(store.link(store.readers[1])).text)  # the browser's CSRF pair, from a page that has a form
    with session_scope(store.engine) as session:
        row = session.get(Subscriber, reader)
        row.status = status
        if paused:  # the app's clock is the real one
            row.paused_until = datetime.now(timezone.utc) + timedelta(days=14)
    token, path = store.token(reader), store.link(reader)

    page = web.get(path)
    posted = web.post(path, data={"csrf": csrf, "vote": "ship"})

    assert page.status_code == 200 and says in html.unescape(page.text)
    assert f'href="/p/{token}"' in page.text and "<button" not in page.text and "<form" not in page.text
    assert posted.status_code == 409 and says in html.unescape(posted.text)
    assert votes(store) == [] and vote_events(store) == []


def test_a_deleted_readers_link_is_a_bad_link_and_their_vote_leaves_the_tally(store):
    """a reader votes, then deletes their data: their link gets the bad token's answer and the tally drops them"""
    web, reader, other = store.web, store.readers[0], store.readers[1]
    path, token_path = store.link(reader), bad_paths(store, reader)["bad token"]
    cast(web, path, "ship")
    csrf = csrf_of(web.get(store.link(other)).text)
    with session_scope(store.engine) as session:
        forget(session=session, subscriber=session.get(Subscriber, reader), now=NOW)

    answers = (web.get(path), web.post(path, data={"csrf": csrf, "vote": "skip"}))

    assert all((a.status_code, a.content) == (404, web.get(token_path).content) for a in answers)
    assert "Readers of this newsletter: 0 ship / 0 skip" in web.get(store.link(other)).text
    assert votes(store) == [] and [e.choice for e in vote_events(store)] == ["ship"]  # the pseudonymous event stays


# -- a scanner reading a real email --------------------------------------------------------------------------

def email_links(batch, recipient) -> list[str]:
    """Every href of the HTML part and every URL of the text part, as the reader's copy has them."""
    hrefs = [html.unescape(h) for h in re.findall(r'href="([^"]+)"', fill(batch.html, recipient.substitutions))]
    urls = re.findall(r"https?://[^\s<>\"')\]]+", fill(batch.text, recipient.substitutions))
    return hrefs + urls


def test_a_scanner_following_every_link_of_a_real_email_three_times_casts_no_vote(db_url, web):
    """the issue email sent to a reader: GET and HEAD each of its links three times, as a scanner does: no vote"""
    engine = web.app.state.ctx.engine
    add_comparison(engine, slug=SLUG, title="Cellmind vs Quill", published_at=NOW - timedelta(days=1))
    add_subscribers(engine, 1)
    transport = RecordingTransport()
    sender = build_sender(web_settings(db_url), transport=transport, sleep=lambda s: None)
    try:
        run(services=sender.services, sender=sender, now=NOW, week="2026-W48")
    finally:
        sender.services.engine.dispose()
    batch = transport.batches[0]
    links = email_links(batch, batch.recipients[0])
    ours = [link for link in links if link.startswith("http://testserver/")]
    assert ours, links

    vote_pages = []
    for link in ours:
        for _ in range(3):
            answers = (web.get(link), web.head(link))
            if "/v/" in link:
                vote_pages.extend(answer.status_code for answer in answers)

    with Session(engine) as session:
        assert session.execute(select(Vote)).first() is None and session.execute(select(VoteEvent)).first() is None
    assert all(status == 200 for status in vote_pages), vote_pages  # each showed its page, and only that
    assert any("/v/" in link for link in ours), "the email carries its Ship/Skip links"


# -- what each page says, and to whom -------------------------------------------------------------------------

def tool_names(store: Store, slug: str = SLUG) -> list[str]:
    with Session(store.engine) as session:
        return list(session.execute(select(Tool.name).join(Comparison).where(Comparison.slug == slug)
                                    .order_by(Tool.position)).scalars())


def test_the_page_names_the_tool_and_thanks_only_after_a_vote(store):
    """the tool's name heads the page; no notice before voting, "Thanks" on the page the vote lands on, and a
    refused post (no choice) says what to do and never that a vote was counted"""
    web, path = store.web, store.link(store.readers[0])
    first, _ = tool_names(store)

    page = web.get(path)
    assert f"<h1>Ship or skip {first}?</h1>" in page.text and f"Your verdict on {first}" in page.text
    assert 'class="notice' not in page.text, "nothing to report before a vote"

    landed = web.get(cast(web, path, "ship").headers["location"])
    assert "Thanks, your vote is counted." in landed.text and "Your vote: Ship" in landed.text

    refused = web.post(path, data={"csrf": csrf_of(page.text)})
    assert refused.status_code == 400 and "Choose Ship or Skip, then Cast my vote." in refused.text
    assert "Your vote: Ship" in refused.text and "Thanks" not in refused.text


def test_a_refused_vote_of_a_reader_we_do_not_write_to_links_their_own_preferences(store):
    """the 409 page (an unsubscribed reader's POST) carries the same preferences link as their GET"""
    web, reader = store.web, store.readers[0]
    csrf = csrf_of(web.get(store.link(store.readers[1])).text)
    with session_scope(store.engine) as session:
        session.get(Subscriber, reader).status = SubscriberStatus.unsubscribed
    token, path = store.token(reader), store.link(reader)

    posted = web.post(path, data={"csrf": csrf, "vote": "ship"})

    assert posted.status_code == 409 and f'<a href="/p/{token}">preferences</a>' in posted.text


def test_a_readers_vote_and_the_tally_are_per_tool_and_per_comparison(store):
    """Ship on tool 1 and Skip on tool 2 of one comparison, Skip on tool 1 of the next issue's: each page shows
    its own vote and counts only its own tool's votes"""
    web, reader = store.web, store.readers[0]
    add_comparison(store.engine, slug="second-vs-third", published_at=NOW + timedelta(days=6))
    open_issue(engine=store.engine, week="2026-W49", now=NOW + timedelta(days=7))
    with Session(store.engine) as session:
        delivery = session.execute(select(Delivery.id).where(Delivery.subscriber_id == reader)
                                   .order_by(Delivery.id)).scalars().first()
    token = recipient_token(store.engine, web.app.state.ctx.signer, reader, delivery)
    ballots = {(SLUG, "1"): "ship", (SLUG, "2"): "skip", ("second-vs-third", "1"): "skip"}
    for (slug, tool), choice in ballots.items():
        assert cast(web, f"/v/{token}/{slug}/{tool}/ship", choice).status_code == 303, (slug, tool)

    for (slug, tool), choice in ballots.items():
        page = web.get(f"/v/{token}/{slug}/{tool}/ship").text
        tally = "1 ship / 0 skip" if choice == "ship" else "0 ship / 1 skip"
        assert f"Your vote: {choice.capitalize()}" in page, (slug, tool)
        assert f"Readers of this newsletter: {tally}" in page, (slug, tool)


def test_links_from_before_tags_vote_only_for_the_row_stored_then_with_its_own_delivery(store):
    """untagged tokens (before migration 0007): a row stored then votes with its own delivery's link (for its
    issue) or one naming none; another reader's delivery, or a row stored since, is the bad link on GET and POST"""
    web, (mine, other, _) = store.web, store.readers
    with session_scope(store.engine) as session:
        session.get(Subscriber, mine).accepts_untagged_links = True
    own, foreign = store.delivery_of(mine), store.delivery_of(other)
    old = URLSafeSerializer(web.app.state.ctx.settings.secret_key, salt=RECIPIENT_SALT).dumps
    csrf = csrf_of(web.get(store.link(other)).text)
    bad = web.get(f"/v/not-a-token/{SLUG}/1/ship").content

    for token in (old([mine, foreign]), old([other, foreign]), old([other, None])):
        path = f"/v/{token}/{SLUG}/1/ship"
        for answer in (web.get(path), web.post(path, data={"csrf": csrf, "vote": "ship"})):
            assert (answer.status_code, answer.content) == (404, bad), token
    assert votes(store) == []

    for tool, token in (("1", old([mine, own])), ("2", old([mine, None]))):
        path = f"/v/{token}/{SLUG}/{tool}/ship"
        assert web.get(path).status_code == 200
        assert web.post(path, data={"csrf": csrf, "vote": "ship"}).status_code == 303, tool
    assert sorted((v.subscriber_id, v.tool_position, v.issue_id) for v in votes(store)) == \
        [(mine, 0, store.issue_id), (mine, 1, None)]
