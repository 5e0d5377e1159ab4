"""What the unsubscribe page and the preference centre tell a reader when they refuse, and what they record when
they act (issue 22's mutation run found the words, the status codes and the events' details held by no test):
every refusal says what was wrong with its own status and changes nothing; every unsubscribe says where it came
from. On SQLite and PostgreSQL."""

from __future__ import annotations

import html
import json
import re
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from sqlmodel import Session

from fastapi.testclient import TestClient

from digest.web import create_app
from storage.db import make_engine
from itsdangerous import URLSafeSerializer

from digest.links import RECIPIENT_SALT
from storage.db import session_scope
from storage.models import Delivery, DeliveryStatus, Event, Issue, Segment, Subscriber, SubscriberStatus
from tests.factories import RecordingTransport, add_comparison, add_subscribers, recipient_token
from tests.fixtures_web import web_settings

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
NO_CHANGE = ("Nothing was changed: this form is out of date or was not sent from our page. "
             "Go back, reload the page and try again.")
STOPPED = (", so we stopped sending to it for good. If you think this is a mistake, reply to any of our emails "
           "and we will look into it.")


def engine_of(web):
    return web.app.state.ctx.engine


def token_for(web, subscriber_id: int) -> str:
    return recipient_token(engine_of(web), web.app.state.ctx.signer, subscriber_id, None)


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]{64})"', page).group(1)


def text_of(response) -> str:
    """The page's words as a reader sees them: tags dropped, entities read, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", response.text)).split())


def paragraphs(response) -> list[str]:
    """The words of each <p> of the page, whole: a message must be one of them exactly, not inside another."""
    return [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", inner)).split())
            for inner in re.findall(r"<p\b[^>]*>(.*?)</p>", response.text, re.S)]


def row(web, subscriber_id: int) -> Subscriber:
    with Session(engine_of(web)) as session:
        found = session.get(Subscriber, subscriber_id)
        session.expunge(found)
        return found


def state(web, subscriber_id: int) -> tuple:
    found = row(web, subscriber_id)
    return found.status, found.categories, found.timezone, found.cadence, found.paused_until


def events(web, subscriber_id: int) -> list[tuple[str, str, str]]:
    with Session(engine_of(web)) as session:
        found = session.execute(select(Event).where(Event.subscriber_id == subscriber_id).order_by(Event.id))
        return [(e.kind, e.source, e.detail) for e in found.scalars()]


def form_post(web, path: str, **fields):
    page = web.get(path)
    assert page.status_code == 200, page.text
    return web.post(path, data={"csrf": csrf_of(page.text), **fields})


REFUSALS = {
    "no action": ({}, SubscriberStatus.active, 400, "That request was not understood."),
    "an unknown action": ({"action": "upgrade"}, SubscriberStatus.active, 400, "That request was not understood."),
    "a pause with no length": ({"action": "pause"}, SubscriberStatus.active, 400,
                               "Choose how long to pause: 1, 2, 4 or 8 weeks."),
    "a pause while unsubscribed": ({"action": "pause", "weeks": "2"}, SubscriberStatus.unsubscribed, 409,
                                   "Only an active subscription can be paused."),
    "a zone not on the list": ({"action": "timing", "timezone": "Mars/Olympus", "cadence": "weekly"},
                               SubscriberStatus.active, 400,
                               "Choose your time zone from the list, or the newsletter's time."),
    "no cadence": ({"action": "timing", "timezone": "", "cadence": "daily"}, SubscriberStatus.active, 400,
                   "Choose weekly or monthly."),
    "a deletion not ticked": ({"action": "delete"}, SubscriberStatus.active, 400,
                              "Nothing was deleted: tick the box to confirm, then press “Delete my data”."),
    "resubscribing an active reader": ({"action": "resubscribe"}, SubscriberStatus.active, 409,
                                       "You are already subscribed."),
    "resubscribing a bounced address": ({"action": "resubscribe"}, SubscriberStatus.bounced, 409,
                                        "Sorry, we cannot resubscribe this address from here: emails to it bounced"
                                        + STOPPED),
    "resubscribing after a spam report": ({"action": "resubscribe"}, SubscriberStatus.complained, 409,
                                          "Sorry, we cannot resubscribe this address from here: an email to it was "
                                          "reported as spam" + STOPPED),
}


@pytest.mark.parametrize("case", REFUSALS, ids=list(REFUSALS))
def test_every_refusal_in_the_preference_centre_says_what_was_wrong_and_changes_nothing(web, case):
    fields, status, code, message = REFUSALS[case]
    web.app.state.ctx.clock = lambda: NOW
    sid, = add_subscribers(engine_of(web), 1, status=status)
    before = state(web, sid)

    refused = form_post(web, f"/p/{token_for(web, sid)}", **fields)

    assert refused.status_code == code
    assert message in paragraphs(refused)
    assert refused.headers["referrer-policy"] == "no-referrer" and refused.headers["cache-control"] == "no-store"
    assert state(web, sid) == before and events(web, sid) == []


@pytest.mark.parametrize("path", ["/p/{token}", "/u/{token}"])
def test_a_form_post_without_our_csrf_field_is_refused_in_words_on_a_token_page(web, path):
    """the 403 names no reader, leaks no token in a Referer and is never cached"""
    sid, = add_subscribers(engine_of(web), 1)
    refused = web.post(path.format(token=token_for(web, sid)), data={"action": "unsubscribe"})
    assert refused.status_code == 403 and NO_CHANGE in paragraphs(refused)
    assert refused.headers["referrer-policy"] == "no-referrer" and refused.headers["cache-control"] == "no-store"
    assert row(web, sid).status == SubscriberStatus.active


def test_an_unknown_action_on_the_unsubscribe_page_is_refused_in_words(web):
    sid, = add_subscribers(engine_of(web), 1)
    refused = form_post(web, f"/u/{token_for(web, sid)}", action="upgrade")
    assert refused.status_code == 400 and "That request was not understood." in paragraphs(refused)
    assert refused.headers["referrer-policy"] == "no-referrer"
    assert row(web, sid).status == SubscriberStatus.active and events(web, sid) == []


@pytest.mark.parametrize("way, detail", [("one-click", "one-click (RFC 8058)"),
                                         ("unsubscribe page", "unsubscribe page"),
                                         ("preference centre", "preference centre")])
def test_every_unsubscribe_records_where_it_came_from(web, way, detail):
    """the event says web and which of the three ways: what an operator reads when a reader asks why they left"""
    sid, = add_subscribers(engine_of(web), 1)
    token = token_for(web, sid)
    if way == "one-click":
        answer = web.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 200 and answer.text == "You are unsubscribed.\n"
        assert answer.headers["referrer-policy"] == "no-referrer"
    elif way == "unsubscribe page":
        answer = form_post(web, f"/u/{token}", action="unsubscribe")
        assert answer.status_code == 303 and answer.headers["location"] == f"/u/{token}?done=1"
        assert answer.headers["referrer-policy"] == "no-referrer" and answer.headers["cache-control"] == "no-store"
    else:
        form_post(web, f"/p/{token}", action="unsubscribe")
    assert row(web, sid).status == SubscriberStatus.unsubscribed
    assert events(web, sid) == [("unsubscribe", "web", detail)]


def test_resubscribing_from_the_unsubscribe_page_is_recorded_as_the_readers_own(web):
    sid, = add_subscribers(engine_of(web), 1, status=SubscriberStatus.unsubscribed)
    form_post(web, f"/u/{token_for(web, sid)}", action="resubscribe")
    assert row(web, sid).status == SubscriberStatus.active
    assert events(web, sid) == [("resubscribe", "web", "")]


def test_resubscribing_in_the_preference_centre_is_recorded_as_the_readers_own(web):
    sid, = add_subscribers(engine_of(web), 1, status=SubscriberStatus.unsubscribed)
    answer = form_post(web, f"/p/{token_for(web, sid)}", action="resubscribe")
    assert answer.status_code == 303 and "Welcome back" in text_of(web.get(answer.headers["location"]))
    assert events(web, sid) == [("resubscribe", "web", "")]


def test_a_pause_ends_on_the_date_of_the_newsletters_time_zone(db_url):
    """DIGEST_TIMEZONE Pacific/Auckland: four weeks from noon UTC on 25 November ends on 24 December there"""
    engine = make_engine(db_url)
    app = create_app(web_settings(db_url, timezone="Pacific/Auckland"), engine=engine, transport=RecordingTransport())
    with TestClient(app, base_url="http://testserver", follow_redirects=False) as web:
        web.app.state.ctx.clock = lambda: NOW
        sid, = add_subscribers(engine, 1)
        paused = form_post(web, f"/p/{token_for(web, sid)}", action="pause", weeks="4")
        assert row(web, sid).paused_until == NOW + timedelta(weeks=4)
        assert "Paused until 24 December 2026" in text_of(web.get(paused.headers["location"]))
    engine.dispose()


def test_the_download_of_a_readers_data_is_readable_as_written(web):
    """one field per line and their own letters, not \\u escapes: a person opens this file, not only a program"""
    sid, = add_subscribers(engine_of(web), 1)
    with Session(engine_of(web)) as session:
        session.get(Subscriber, sid).name = "Zoë Ångström"
        session.commit()
    download = form_post(web, f"/p/{token_for(web, sid)}", action="export")
    assert '"name": "Zoë Ångström"' in download.text
    assert download.text == json.dumps(json.loads(download.text), indent=2, ensure_ascii=False)


# -- what the preference centre shows -----------------------------------------------------------------------------

def notice_of(response) -> str:
    """The words in the page's role="status" element: what the last change did."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", re.search(
        r'<div role="status">(.*?)</div>', response.text, re.S).group(1))).split())


def test_the_page_names_the_reader_its_forms_post_to_their_link_and_it_says_nothing_unasked(web):
    sid, = add_subscribers(engine_of(web), 1)
    token = token_for(web, sid)
    page = web.get(f"/p/{token}")
    assert f'For <strong class="address">{row(web, sid).email}</strong>.' in page.text
    assert "You get one email a week." in text_of(page)
    actions = re.findall(r'<form method="post" action="([^"]*)"', page.text)
    assert actions and set(actions) == {f"/p/{token}"}
    assert notice_of(page) == "" and 'role="alert"' not in page.text


def test_a_pause_is_over_the_moment_it_ends(web):
    sid, = add_subscribers(engine_of(web), 1)
    token = token_for(web, sid)
    web.app.state.ctx.clock = lambda: NOW
    form_post(web, f"/p/{token}", action="pause", weeks="1")
    paused = web.get(f"/p/{token}")
    assert "Paused until <strong>2 December 2026</strong>." in paused.text and notice_of(paused) == ""
    for later in (NOW + timedelta(weeks=1), NOW + timedelta(weeks=3)):
        web.app.state.ctx.clock = lambda: later
        shown = text_of(web.get(f"/p/{token}"))
        assert "You get one email a week." in shown and "Paused until" not in shown


def test_after_each_change_the_page_says_what_was_done(web):
    sid, = add_subscribers(engine_of(web), 1)
    token = token_for(web, sid)
    web.app.state.ctx.clock = lambda: NOW

    def after(**fields) -> str:
        answer = form_post(web, f"/p/{token}", **fields)
        assert answer.status_code == 303
        return notice_of(web.get(answer.headers["location"]))

    add_comparison(engine_of(web), category="Writing", published_at=NOW)
    add_comparison(engine_of(web), category="Security", published_at=NOW)
    assert after(action="categories", category=["Writing", "Security"]) == "Saved. You will get: Security, Writing."
    assert after(action="categories") == "Saved. You will get every category."
    assert after(action="pause", weeks="2") == "Paused. You will get no email until the date shown below."
    assert after(action="resume") == "Resumed. You will get the next issue."
    assert after(action="timing", timezone="", cadence="weekly") == \
        "Saved. You will get one email a week, timed for the newsletter's time (UTC)."
    assert after(action="timing", timezone="America/New_York", cadence="monthly") == \
        "Saved. You will get one email a month, the month's best verdicts you haven't seen, timed for America/New_York."
    assert after(action="unsubscribe") == \
        "You are unsubscribed from everything. You will get no more emails from us."
    assert notice_of(web.get(f"/p/{token}")) == ""  # the notice is for the change just made, not the state
    assert after(action="resubscribe") == "Welcome back: you are subscribed again."


def test_time_zones_are_offered_by_their_name_with_spaces(web):
    sid, = add_subscribers(engine_of(web), 1)
    page = web.get(f"/p/{token_for(web, sid)}")
    assert '<option value="America/New_York">America/New York</option>' in page.text
    assert '<option value="" selected>The newsletter&#39;s time (UTC)</option>' in page.text


def test_a_dormant_readers_page_offers_to_resume_since_the_day_they_stopped(web):
    sid, = add_subscribers(engine_of(web), 1, status=SubscriberStatus.dormant)
    with Session(engine_of(web)) as session:
        session.get(Subscriber, sid).updated_at = datetime(2027, 1, 14, 9, tzinfo=timezone.utc)
        session.commit()
    token = token_for(web, sid)
    for path in (f"/p/{token}", f"/u/{token}"):
        assert "You have not been getting the verdicts since 14 January 2027 — resume?" in text_of(web.get(path))


def test_a_category_is_offered_in_the_spelling_most_of_its_comparisons_use(web):
    """two comparisons filed as "writing" (one with a stray space) against one "Writing": the box says "writing"."""
    for spelling in (" writing", "writing ", "Writing", "Developer Tools", "Developer Tools", "developer tools"):
        add_comparison(engine_of(web), category=spelling, published_at=NOW)
    sid, = add_subscribers(engine_of(web), 1)
    page = web.get(f"/p/{token_for(web, sid)}")
    labels = re.findall(r'name="category" value="[^"]*"[^>]*>\s*([^<]+?)\s*<', page.text)
    assert labels == ["Developer Tools", "writing"]


def test_a_link_from_before_tags_opens_only_its_own_rows_page_and_only_with_its_own_delivery(web):
    """rows stored before link tags (migration 0007) honour the two-value tokens of their old emails, and a token
    that names a delivery only when the delivery is theirs: an id may have changed hands before the tags came"""
    engine = engine_of(web)
    mine, other = add_subscribers(engine, 2)
    with session_scope(engine) as session:
        session.get(Subscriber, mine).accepts_untagged_links = True
        issue = Issue(week="2026-W40", created_at=NOW)
        session.add(issue)
        session.flush()
        segment = Segment(issue_id=issue.id, key="k", comparison_ids="")
        session.add(segment)
        session.flush()
        deliveries = [Delivery(issue_id=issue.id, subscriber_id=sid, segment_id=segment.id,
                               status=DeliveryStatus.sent, sent_at=NOW, message_id=f"m-{sid}") for sid in (mine, other)]
        session.add_all(deliveries)
        session.flush()
        own, foreign = (delivery.id for delivery in deliveries)
    old = URLSafeSerializer(web.app.state.ctx.settings.secret_key, salt=RECIPIENT_SALT).dumps

    assert web.get(f"/p/{old([mine, None])}").status_code == 200
    assert web.get(f"/p/{old([mine, own])}").status_code == 200
    assert web.get(f"/p/{old([mine, foreign])}").status_code == 404
    assert web.get(f"/p/{old([other, None])}").status_code == 404  # a row stored since: its tag or nothing
