"""The welcome on day one (issue 19, item 3), through the web app as it runs in production: a signup, its
confirmation, and the welcome the confirm POST claims, all sent by the signup mailer's own process — to the
outbox, and through the real `sendgrid` client to tests/sendgrid_server.py. Its email gates (strict MJML,
SpamAssassin, widths, contrast, the text part) are with the digest's: tests/test_mjml_validator.py,
test_email_spam.py, test_email_screens.py, test_email_a11y.py, test_text_part.py."""

from __future__ import annotations

import email
import email.policy
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from digest.claim.opening import open_issue
from digest.importing.subscribers import import_subscribers
from digest.subscribers.signup_mailer import SignupMailer
from digest.subscribers.welcome import clearest, clearest_verdict, expectation
from digest.web import create_app
from storage.db import make_engine, session_scope
from storage.models import Subscriber, SubscriberStatus
from storage.welcome import claim_welcome
from tests.email_samples import make_comparison, sample_settings, with_review, with_tool
from tests.factories import add_comparison, recipient_token
from tests.fixtures_signup import sent, web  # noqa: F401 — fixtures: the SendGrid app of tests/test_web_signup.py
from tests.fixtures_web import web_settings

CONFIRM_LINK = re.compile(r"http://testserver/confirm/([A-Za-z0-9_\-.]+)")
PREFERENCES_LINK = re.compile(r"http://testserver/p/([A-Za-z0-9_\-.]+)")
WELCOME = "Welcome to Weekly AI Tool Verdicts: what to expect"
PUBLISHED = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
OPENED = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)  # Thursday 09:00 of 2026-W48, the default schedule
CONFIRMED = datetime(2026, 11, 30, 18, 0, tzinfo=timezone.utc)  # the Monday after: the next issue is Thursday's


@dataclass(frozen=True)
class Mail:
    to: str
    subject: str
    text: str
    html: str
    headers: dict[str, str]


class Site:
    """The app over a fresh store, its signup mailer a child process writing to an outbox, its clock at CONFIRMED."""

    def __init__(self, client: TestClient, outbox: Path):
        self.client = client
        self.outbox = outbox
        self.engine = client.app.state.ctx.engine
        self.signer = client.app.state.ctx.signer

    def mails(self) -> list[Mail]:
        """Every email the mailer has written, once it has dealt with every letter handed to it."""
        assert self.client.app.state.signup_mailer.wait_idle(timeout=60), "the signup mailer did not finish"
        return [_read(path) for path in sorted(self.outbox.glob("*.eml"), key=lambda path: path.stat().st_mtime_ns)]

    def welcomes(self, address: str) -> list[Mail]:
        return [mail for mail in self.mails() if mail.to == address and mail.subject == WELCOME]

    def sign_up(self, address: str) -> str:
        """Sign ``address`` up through the form; the token of the confirmation link it was sent."""
        form = self.client.get("/subscribe")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
        assert self.client.post("/subscribe", data={"email": address, "csrf": csrf}).status_code == 200
        [*_, confirmation] = [mail for mail in self.mails() if mail.to == address and CONFIRM_LINK.search(mail.text)]
        return CONFIRM_LINK.search(confirmation.text).group(1)

    def confirm(self, token: str) -> bool:
        """POST the confirm link; True when the page says a welcome is on its way."""
        answer = self.client.post(f"/confirm/{token}")
        assert answer.status_code == 200 and "confirmed" in answer.text
        return "A welcome email with what to expect is on its way." in answer.text

    def reader(self, address: str) -> Subscriber:
        with session_scope(self.engine) as session:
            return session.execute(select(Subscriber).where(Subscriber.email_key == address)).scalars().one()

    def publish_an_issue(self) -> list[str]:
        """Issue 2026-W48 of five comparisons, opened at OPENED; the three clearest titles, clearest first.

        The issue's rank (the spread of ship % between its tools) is not clarity: "Three of four" ranks in the
        top three and is not among the clearest; the 4-of-4 skip ranks fourth or fifth and is."""
        for title, pcts in [("Clear ship, widest spread", (100, 0)), ("Three of four", (75, 25)),
                            ("Split 2 of 4", (50, 50)), ("Clear skip", (0, 0)), ("Clear ship, some spread", (100, 50))]:
            add_comparison(self.engine, title=title, pcts=pcts, published_at=PUBLISHED)
        assert open_issue(engine=self.engine, week="2026-W48", now=OPENED).created
        return ["Clear ship, widest spread", "Clear ship, some spread", "Clear skip"]


def _read(path: Path) -> Mail:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    text, html = (message.get_body(preferencelist=(kind,)).get_content() for kind in ("plain", "html"))
    return Mail(to=message["To"].addresses[0].addr_spec, subject=str(message["Subject"]), text=text, html=html,
                headers={name: str(value) for name, value in message.items()})


@pytest.fixture
def site(db_url, tmp_path) -> Iterator[Site]:
    engine = make_engine(db_url)
    settings = web_settings(db_url, outbox_dir=tmp_path / "outbox")
    app = create_app(settings, engine=engine, clock=lambda: CONFIRMED)
    app.state.signup_mailer = SignupMailer(settings, spread_seconds=0)  # the production child, no random wait
    with TestClient(app, base_url="http://testserver", follow_redirects=False) as client:
        yield Site(client, tmp_path / "outbox")
    engine.dispose()


def verdict_lines(mail: Mail) -> list[tuple[str, str]]:
    """(title, "Panel: …") of each verdict the welcome's text part shows, in order."""
    lines = mail.text.split("\n")
    return [(lines[i - 1].strip(), line.strip()) for i, line in enumerate(lines) if line.startswith("  Panel: ")]


# -- through the web app ----------------------------------------------------------------------------------------

def test_confirming_a_signup_sends_one_welcome_with_the_latest_issues_three_clearest_verdicts(site):
    """sign up, confirm: one welcome in the outbox after the confirmation, what to expect, the three clearest
    verdicts of the latest issue in order of clarity with their links, and a preferences link that works"""
    clearest_titles = site.publish_an_issue()

    assert site.confirm(site.sign_up("ada@example.com"))

    [welcome] = site.welcomes("ada@example.com")
    ada = site.reader("ada@example.com")
    assert ada.welcomed_at == CONFIRMED and ada.status == SubscriberStatus.active
    assert [title for title, _ in verdict_lines(welcome)] == clearest_titles
    assert [line.rsplit(" ", 1)[0] for _, line in verdict_lines(welcome)] == \
        ["Panel: 4 of 4 ship Tool", "Panel: 4 of 4 ship Tool", "Panel: 4 of 4 skip Tool"]
    assert "One email every Thursday at 09:00 UTC" in welcome.text
    assert "Your first issue arrives on Thursday 3 December." in welcome.text
    assert "Week 48 · 26 November 2026" in welcome.text
    for slug in re.findall(r"https://verdicts\.example\.com/compare/(\S+)", welcome.text):
        assert f'href="https://verdicts.example.com/compare/{slug}"' in welcome.html
    assert "[%" not in welcome.text + welcome.html + welcome.subject and "Hi there," in welcome.text
    preferences = PREFERENCES_LINK.search(welcome.text).group(1)
    assert site.signer.read_recipient_token(preferences).subscriber_id == ada.id
    assert f'href="http://testserver/p/{preferences}"' in welcome.html
    page = site.client.get(f"/p/{preferences}")
    assert page.status_code == 200 and "ada@example.com" in page.text
    assert welcome.headers["List-Unsubscribe"] == f"<http://testserver/u/{preferences}>"
    assert welcome.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" and welcome.headers["List-Id"]


def test_a_second_post_of_the_link_and_a_reconfirm_after_leaving_send_no_second_welcome(site):
    """the confirm link POSTed again, then an unsubscribe (one click) and a new signup confirmed: one welcome"""
    token = site.sign_up("grace@example.com")
    assert site.confirm(token)
    [welcome] = site.welcomes("grace@example.com")

    assert not site.confirm(token)
    assert len(site.welcomes("grace@example.com")) == 1
    unsubscribe = welcome.headers["List-Unsubscribe"].strip("<>").removeprefix("http://testserver")
    assert site.client.post(unsubscribe, data={"List-Unsubscribe": "One-Click"}).status_code == 200
    assert site.reader("grace@example.com").status == SubscriberStatus.unsubscribed
    assert not site.confirm(site.sign_up("grace@example.com"))

    assert site.reader("grace@example.com").status == SubscriberStatus.active
    assert len(site.welcomes("grace@example.com")) == 1
    assert site.reader("grace@example.com").welcomed_at == CONFIRMED


def test_a_reader_from_a_csv_import_who_leaves_and_confirms_a_signup_gets_no_welcome(site, tmp_path):
    """an import is the reader's day one (active, confirmed, no email): leaving and confirming again welcomes nobody"""
    (csv := tmp_path / "readers.csv").write_text("email,name\nlin@example.com,Lin\n", encoding="utf-8")
    import_subscribers(engine=site.engine, path=csv, now=CONFIRMED)
    lin = site.reader("lin@example.com")
    one_click = f"/u/{recipient_token(site.engine, site.signer, lin.id)}"
    assert site.client.post(one_click, data={"List-Unsubscribe": "One-Click"}).status_code == 200

    assert not site.confirm(site.sign_up("lin@example.com"))

    assert site.reader("lin@example.com").status == SubscriberStatus.active
    assert site.welcomes("lin@example.com") == [] and site.reader("lin@example.com").welcomed_at is None


def test_before_the_first_issue_the_welcome_says_when_it_arrives_instead(site):
    """no issue yet: no verdicts, one sentence saying when the first issue arrives"""
    site.confirm(site.sign_up("new@example.com"))

    [welcome] = site.welcomes("new@example.com")
    assert verdict_lines(welcome) == [] and "CLEAREST VERDICTS" not in welcome.text
    assert "Your first issue arrives on Thursday 3 December, with the verdicts published until then." in \
        " ".join(welcome.text.split())
    assert "The clearest verdicts" not in welcome.html


def test_through_sendgrid_the_welcome_is_one_more_request(web, sent, fake_sendgrid):  # noqa: F811 (fixtures)
    """with the SendGrid transport, confirming makes one more request: the welcome, to the reader alone, with
    the list headers, their token and name substituted by SendGrid, and the kind "welcome\""""
    add_comparison(web.app.state.ctx.engine, title="Clear ship", pcts=(100, 0), published_at=PUBLISHED)
    assert open_issue(engine=web.app.state.ctx.engine, week="2026-W48", now=OPENED).created
    form = web.get("/subscribe")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
    web.post("/subscribe", data={"email": "sam@example.com", "name": "Sam", "csrf": csrf})
    [confirmation] = sent.all()

    web.post(f"/confirm/{CONFIRM_LINK.search(confirmation.text).group(1)}")
    web.post(f"/confirm/{CONFIRM_LINK.search(confirmation.text).group(1)}")

    assert len(sent.all()) == 2
    body = fake_sendgrid.sandboxed[-1]
    assert body["subject"] == WELCOME and body["categories"] == ["welcome"]
    [person] = body["personalizations"]
    assert body["custom_args"] == {"kind": "welcome"} and "custom_args" not in person  # no delivery: no issue's
    assert person["to"] == [{"email": "sam@example.com", "name": "Sam"}]
    assert person["headers"]["List-Unsubscribe"].startswith("<http://testserver/u/")
    assert person["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    [welcome] = sent.to("sam@example.com")[1:]
    assert "Panel: 4 of 4 ship" in welcome.text and "Clear ship" in welcome.text


def test_the_welcome_is_claimed_once_whoever_asks(engine):
    """claim_welcome: the first claim of a reader is True, every later one False and the first time is kept"""
    with session_scope(engine) as session:
        reader = Subscriber(email="x@example.com", email_key="x@example.com", status=SubscriberStatus.active)
        session.add(reader)
        session.flush()
        reader_id = reader.id

    with session_scope(engine) as session:
        first = claim_welcome(session=session, subscriber_id=reader_id, now=OPENED)
    with session_scope(engine) as session:
        second = claim_welcome(session=session, subscriber_id=reader_id, now=CONFIRMED)
        welcomed = session.get(Subscriber, reader_id).welcomed_at

    assert (first, second, welcomed) == (True, False, OPENED)


def test_two_confirmations_at_once_claim_one_welcome(engine):
    """a claim made while another transaction holds an uncommitted claim of the same reader waits for it, then
    claims nothing (PostgreSQL: the row lock; SQLite: the write lock)"""
    with session_scope(engine) as session:
        reader = Subscriber(email="y@example.com", email_key="y@example.com", status=SubscriberStatus.active)
        session.add(reader)
        session.flush()
        reader_id = reader.id
    claims: list[bool] = []

    def racing_claim() -> None:
        with session_scope(engine) as session:
            claims.append(claim_welcome(session=session, subscriber_id=reader_id, now=CONFIRMED))

    with session_scope(engine) as session:
        claims.append(claim_welcome(session=session, subscriber_id=reader_id, now=OPENED))
        racer = threading.Thread(target=racing_claim)
        racer.start()
    racer.join(timeout=60)

    assert claims == [True, False]


# -- the rules, as pure functions --------------------------------------------------------------------------------

def panel(index: int, *votes: tuple[str, ...]) -> object:
    """A comparison whose tools' seats vote ``votes`` (one tuple of "ship"/"skip"/other per tool)."""
    comparison = make_comparison(index, tools=len(votes))
    for position, verdicts in enumerate(votes):
        comparison = with_tool(comparison, position, reviews=comparison.tools[position].reviews[:len(verdicts)])
        for seat, verdict in enumerate(verdicts):
            comparison = with_review(comparison, position, seat, verdict=verdict)
    return comparison


def test_clarity_is_the_largest_share_of_the_panel_agreeing_on_one_tool_and_rank_breaks_ties():
    """4 of 4 (ship or skip) before 3 of 4 before a split; equal shares keep the issue's rank; no votes, no verdict"""
    ranked = [
        panel(0, ("ship", "ship", "skip", "skip"), ("ship", "skip", "skip", "ship")),  # 2 of 4 either way
        panel(1, ("ship", "ship", "ship", "skip"), ("skip", "skip", "skip", "ship")),  # 3 of 4: the ship
        panel(2, ("skip", "skip", "skip", "skip"), ("ship", "ship", "skip", "skip")),  # 4 of 4 skip
        panel(3, (), ()),  # no panel vote yet
        panel(4, ("ship", "ship", "ship", "ship"), ("skip", "skip", "skip", "skip")),  # 4 of 4: the ship
        panel(5, ("ship", "ship"), ("ship",)),  # 2 of 2 and 1 of 1: all agree, the larger panel
    ]

    shown = clearest(ranked)

    assert [verdict.comparison.title for verdict in shown] == ["Tool A2 vs Tool B2", "Tool A4 vs Tool B4",
                                                               "Tool A5 vs Tool B5"]
    assert [verdict.line for verdict in shown] == ["Panel: 4 of 4 skip Tool A2", "Panel: 4 of 4 ship Tool A4",
                                                   "Panel: 2 of 2 ship Tool A5"]
    assert clearest_verdict(ranked[1]).line == "Panel: 3 of 4 ship Tool A1"
    assert clearest_verdict(ranked[0]).share == Fraction(1, 2) and clearest_verdict(ranked[3]) is None
    assert [v.comparison.title for v in clearest(ranked, count=6)][3:] == ["Tool A1 vs Tool B1", "Tool A0 vs Tool B0"]


@pytest.mark.parametrize("delivery, zone, cadence, expected", [
    ("global", None, "weekly", ("every Thursday at 09:00 UTC", "Thursday 3 December")),
    ("global", "Pacific/Auckland", "weekly", ("every Thursday at 09:00 UTC", "Thursday 3 December")),
    ("local", "Pacific/Auckland", "weekly",
     ("every Thursday at 09:00 in your time zone (Pacific/Auckland)", "Thursday 3 December")),
    ("local", None, "weekly", ("every Thursday at 09:00 UTC", "Thursday 3 December")),
    ("local", "America/New_York", "monthly",
     ("on the first Thursday of each month at 09:00 in your time zone (America/New_York)", "Thursday 3 December")),
    ("global", None, "monthly", ("on the first Thursday of each month at 09:00 UTC", "Thursday 3 December")),
])
def test_what_to_expect_names_the_schedules_day_and_hour_in_the_readers_zone_or_the_lists(delivery, zone, cadence,
                                                                                           expected):
    """DIGEST_DELIVERY=local and a zone: "in your time zone"; otherwise DIGEST_TIMEZONE; monthly: the first day"""
    settings = sample_settings().model_copy(update={"delivery": delivery})

    said = expectation(settings=settings, zone=zone, cadence=cadence, now=CONFIRMED)

    assert (said.when, said.first) == expected


def test_a_monthly_reader_after_this_months_first_day_hears_of_next_months():
    """confirmed on 10 December, after its first Thursday (the 3rd): the first monthly email is 7 January's, and a
    list in Europe/Berlin says so in its time"""
    settings = sample_settings().model_copy(update={"timezone": "Europe/Berlin"})

    said = expectation(settings=settings, zone=None, cadence="monthly",
                       now=datetime(2026, 12, 10, 12, tzinfo=timezone.utc))

    assert said.when == "on the first Thursday of each month at 09:00 Europe/Berlin time"
    assert said.first == "Thursday 7 January"
