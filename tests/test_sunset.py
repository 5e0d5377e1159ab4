"""The sunset (issue 18, item 4), on SQLite and PostgreSQL: who is asked "Still want the verdicts?", once;
the keep page; dormancy 14 days later without an answer; dormant readers get no issue and every old link
offers to resume; the letter's content and headers, its MJML and its spam score. Time is passed in."""

from __future__ import annotations

import email
import re
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlmodel import Session
from typer.testing import CliRunner

import scheduler
from digest.cli.main import cli
from digest.editor.dry_run import dry_run
from digest.services import build_services
from digest.subscribers.sunset import render_letter, sunset
from digest.transports.base import PermanentError, TransientError, fill
from digest.transports.outbox import OutboxTransport
from digest.web import create_app
from storage.db import make_engine, session_scope
from storage.issues import FanOutTarget, fan_out_segments
from storage.models import Delivery, DeliveryStatus, Event, Issue, Segment, Subscriber, SubscriberStatus
from storage.models.votes import Vote
from tests.factories import RecordingTransport, add_comparison, add_subscribers
from tests.fixtures_web import web_settings
from tests.test_email_spam import MAX_SCORE, spamassassin
from tests.test_mjml_validator import validate

NOW = datetime(2026, 12, 1, 4, 30, tzinfo=timezone.utc)
WEEK = timedelta(weeks=1)
DAY = timedelta(days=1)


class Site:
    """The store, the sunset's services and the web app over one database, at a clock the test moves."""

    def __init__(self, db_url: str):
        self.now = NOW
        self.settings = web_settings(db_url)
        self.engine = make_engine(db_url)
        self.transport = RecordingTransport()
        self.services = build_services(self.settings, transport=self.transport, engine=self.engine,
                                       sleep=lambda seconds: None)
        app = create_app(self.settings, engine=self.engine, transport=RecordingTransport(), clock=lambda: self.now)
        self.client = TestClient(app, base_url="http://testserver", follow_redirects=False)
        self.issues = self._issues(26)

    def _issues(self, count: int) -> list[tuple[int, int]]:
        """(issue id, segment id) of ``count`` weekly issues, the last one sent 2 days ago, oldest first."""
        made = []
        with session_scope(self.engine) as session:
            for back in range(count, 0, -1):
                issue = Issue(week=f"2026-W{49 - back:02d}", created_at=NOW - back * WEEK)
                session.add(issue)
                session.flush()
                segment = Segment(issue_id=issue.id, key=f"s{issue.id}", comparison_ids="")
                session.add(segment)
                session.flush()
                made.append((issue.id, segment.id))
        return made

    def reader(self, *, issues: int = 10, status=SubscriberStatus.active) -> int:
        """A reader who was sent the last ``issues`` issues (one a week, the last 2 days ago)."""
        (reader,) = add_subscribers(self.engine, 1, status=status)
        with session_scope(self.engine) as session:
            for back, (issue_id, segment_id) in enumerate(reversed(self.issues[-issues:] if issues else [])):
                session.add(Delivery(issue_id=issue_id, subscriber_id=reader, segment_id=segment_id,
                                     status=DeliveryStatus.sent, sent_at=NOW - 2 * DAY - back * WEEK))
        return reader

    def event(self, reader: int, kind: str, *, at: datetime, machine: bool = False) -> None:
        with session_scope(self.engine) as session:
            delivery = session.execute(select(Delivery.id).where(Delivery.subscriber_id == reader)).scalars().first()
            session.add(Event(kind=kind, source="pixel" if kind == "open" else "click", occurred_at=at,
                              subscriber_id=reader, delivery_id=delivery, machine=machine))

    def vote(self, reader: int, *, at: datetime) -> None:
        comparison = add_comparison(self.engine, published_at=at - WEEK)
        with session_scope(self.engine) as session:
            session.add(Vote(subscriber_id=reader, comparison_id=comparison, tool_position=0, choice="ship",
                             event_id=1, cast_at=at))

    def run(self, *, after: timedelta = timedelta(0), dry_run: bool = False):
        self.now = NOW + after
        return sunset(services=self.services, now=self.now, dry_run=dry_run)

    def row(self, reader: int) -> Subscriber:
        with Session(self.engine) as session:
            return session.get(Subscriber, reader)

    def kinds(self, reader: int) -> list[str]:
        with Session(self.engine) as session:
            return list(session.execute(select(Event.kind).where(Event.subscriber_id == reader, Event.source != "pixel",
                                                                 Event.source != "click").order_by(Event.id)).scalars())

    def asked(self) -> list[str]:
        return [email.split("@")[0] for email in self.transport.recipients]

    def token(self, reader: int) -> str:
        return self.services.signer.recipient_token(subscriber_id=reader, delivery_id=None,
                                                    tag=self.row(reader).link_tag)

    def post(self, path: str, action: str):
        """Press the button of form ``action`` on the page at ``path``, as a browser would."""
        page = self.client.get(path).text
        form = re.search(rf'<form method="post" action="([^"]+)">\s*<input type="hidden" name="csrf" value="([0-9a-f]{{64}})">'
                         rf'\s*<input type="hidden" name="action" value="{action}">', page)
        return self.client.post(form.group(1), data={"action": action, "csrf": form.group(2)})


@pytest.fixture
def site(db_url):
    made = Site(db_url)
    yield made
    made.client.close()
    made.engine.dispose()


def name(site: Site, reader: int) -> str:
    return site.row(reader).email.split("@")[0]


# -- who is asked -----------------------------------------------------------------------------------------------

def test_silent_readers_sent_eight_issues_are_asked_and_any_human_sign_of_life_spares_a_reader(site):
    "26 weeks without a human open, click or vote and ≥ 8 issues: asked; a machine open does not save them"
    silent, machine_only = site.reader(issues=10), site.reader(issues=8)
    site.event(machine_only, "open", at=NOW - 3 * DAY, machine=True)
    opened, clicked, voted = site.reader(), site.reader(), site.reader()
    site.event(opened, "open", at=NOW - 20 * WEEK)
    site.event(clicked, "click", at=NOW - 25 * WEEK)
    site.vote(voted, at=NOW - 4 * WEEK)
    few, paused, left = site.reader(issues=7), site.reader(), site.reader(status=SubscriberStatus.unsubscribed)
    long_ago = site.reader(issues=26)
    site.event(long_ago, "click", at=NOW - 27 * WEEK)  # engaged, but before the window
    with session_scope(site.engine) as session:
        session.get(Subscriber, paused).paused_until = NOW + 2 * WEEK

    assert site.run(dry_run=True).asked == 3 and site.transport.batches == []
    report = site.run()

    assert report.asked == 3 and report.dormant == 0 and report.error is None
    assert sorted(site.asked()) == sorted(name(site, r) for r in (silent, machine_only, long_ago))
    assert site.row(silent).repermission_sent_at == NOW
    for spared in (opened, clicked, voted, few, paused, left):
        assert site.row(spared).repermission_sent_at is None


def test_a_reader_is_asked_once_and_goes_dormant_fourteen_days_later_without_an_answer(site):
    "asked once (the next days send nothing); 13 days on still active; on day 14 dormant, with an event"
    reader = site.reader()
    site.run()
    for day in range(1, 14):
        assert site.run(after=day * DAY).asked == 0
        assert site.row(reader).status == SubscriberStatus.active

    report = site.run(after=14 * DAY)

    assert (report.asked, report.dormant) == (0, 1)
    assert len(site.transport.batches) == 1
    assert site.row(reader).status == SubscriberStatus.dormant
    assert site.kinds(reader) == ["dormant"]
    assert site.run(after=15 * DAY).dormant == 0  # once


def test_a_click_after_the_ask_answers_it_and_a_new_silence_asks_again(site):
    "a click 3 days after the ask: never dormant; 26 silent weeks after that click, asked a second time"
    reader = site.reader(issues=26)
    site.run()
    site.event(reader, "click", at=NOW + 3 * DAY)

    assert site.run(after=14 * DAY).dormant == 0
    assert site.row(reader).status == SubscriberStatus.active
    with session_scope(site.engine) as session:  # 26 more issues, none opened
        for back, (issue_id, _) in enumerate(site.issues):
            session.execute(Delivery.__table__.update().where(Delivery.subscriber_id == reader,
                                                               Delivery.issue_id == issue_id)
                            .values(sent_at=NOW + 27 * WEEK - 2 * DAY - back * WEEK))
    assert site.run(after=27 * WEEK).asked == 1
    assert len(site.transport.batches) == 2


def test_a_thousand_and_one_silent_readers_go_out_in_two_batches(site):
    "1,001 readers to ask: two transport batches, 1000 then 1, each recipient once"
    readers = add_subscribers(site.engine, 1001)
    with session_scope(site.engine) as session:
        session.execute(Delivery.__table__.insert(), [
            dict(issue_id=issue_id, subscriber_id=reader, segment_id=segment_id, status="sent", attempts=1,
                 ambiguous_resends=0, created_at=NOW, sent_at=NOW - 2 * DAY - back * WEEK)
            for reader in readers for back, (issue_id, segment_id) in enumerate(reversed(site.issues[-8:]))])

    assert site.run().asked == 1001

    assert [len(batch.recipients) for batch in site.transport.batches] == [1000, 1]
    assert len(set(site.transport.recipients)) == 1001


def test_a_provider_failure_leaves_the_readers_unasked_for_the_next_pass(site):
    "three transient failures, then a refusal: nobody marked asked, the pass says why; the next pass asks them"
    reader = site.reader()
    site.transport.errors = [TransientError("503")] * 3

    failed = site.run()

    assert failed.asked == 0 and "failed 3 times" in failed.error
    assert site.row(reader).repermission_sent_at is None
    site.transport.errors = [PermanentError("bad sender")]
    assert "refused" in site.run(after=DAY).error
    assert site.run(after=2 * DAY).asked == 1


# -- the keep page and the resume offer ---------------------------------------------------------------------------

def test_the_keep_page_asks_on_get_and_a_post_keeps_the_reader(site):
    "GET /k/ changes nothing; the POST clears the ask with a 'keep' event; 14 days on they are not dormant"
    reader = site.reader()
    site.run()
    page = site.client.get(f"/k/{site.token(reader)}")
    assert page.status_code == 200 and "Still want the verdicts?" in page.text
    assert site.row(reader).repermission_sent_at == NOW and site.kinds(reader) == []

    done = site.post(f"/k/{site.token(reader)}", "keep")

    assert done.status_code == 303
    assert "you will keep getting" in site.client.get(done.headers["location"]).text
    assert site.row(reader).repermission_sent_at is None and site.kinds(reader) == ["keep"]
    assert site.run(after=14 * DAY).dormant == 0 and site.run(after=15 * DAY).asked == 0
    assert site.row(reader).status == SubscriberStatus.active


def test_every_old_link_of_a_dormant_reader_offers_to_resume_and_the_post_resumes_them(site):
    "/u/, /p/ and /k/ say since when and offer to resume; the POST makes them active with a 'resume' event"
    reader = site.reader()
    site.run()
    site.run(after=14 * DAY)
    token = site.token(reader)

    for path in (f"/u/{token}", f"/p/{token}", f"/k/{token}"):
        page = site.client.get(path)
        assert page.status_code == 200, path
        assert "You have not been getting the verdicts since 15 December 2026 — resume?" in page.text, path
        assert f'action="/k/{token}"' in page.text and 'value="resume"' in page.text, path
    assert site.row(reader).status == SubscriberStatus.dormant

    done = site.post(f"/u/{token}", "resume").headers["location"]

    assert site.row(reader).status == SubscriberStatus.active
    assert site.kinds(reader) == ["dormant", "resume"]
    assert "Welcome back" in site.client.get(done).text
    assert site.run(after=15 * DAY).asked == 0 and site.run(after=29 * DAY).dormant == 0


def test_a_keep_or_resume_post_without_the_csrf_field_changes_nothing(site):
    "a forged form to /k/ (no field): 403, the reader stays as they were"
    reader = site.reader()
    site.run()
    refused = site.client.post(f"/k/{site.token(reader)}", data={"action": "keep"})
    assert refused.status_code == 403
    assert site.row(reader).repermission_sent_at == NOW


# -- dormant readers get nothing -------------------------------------------------------------------------------

def test_dormant_readers_get_no_issue_and_the_dry_run_says_why(site):
    "the fan-out takes the active reader only; `send --dry-run`'s get-nothing list names the dormant one"
    active, dormant = site.reader(issues=0), site.reader()
    site.run()
    site.run(after=14 * DAY)
    add_comparison(site.engine, published_at=site.now - DAY)

    plan = dry_run(services=site.services, week=None, now=site.now, limit=None)
    with session_scope(site.engine) as session:
        issue, segment = site.issues[0]
        fan_out_segments(session=session, issue_id=issue, targets=[FanOutTarget([""], segment)], now=site.now,
                         origins=(), engaged_first=False, due=None)
        fanned = session.execute(select(Delivery.subscriber_id).where(Delivery.status == "pending")).scalars().all()

    assert fanned == [active]
    assert plan.nothing == {"dormant": 1}
    assert [(person.email, person.reason) for person in plan.left_out] == [(site.row(dormant).email, "dormant")]


# -- the letter ------------------------------------------------------------------------------------------------------

def test_the_letter_asks_one_question_with_one_button_to_the_keep_page_and_the_list_headers(site):
    "subject, text and HTML ask 'Still want the verdicts?'; one button to /k/ that opens the reader's page"
    reader = site.reader()
    site.run()
    (batch,) = site.transport.batches
    (person,) = batch.recipients
    html, text = fill(batch.html, person.substitutions), fill(batch.text, person.substitutions)
    keep = f"http://testserver/k/{site.token(reader)}"

    assert batch.subject == "Still want the verdicts?"
    assert f"Hi {site.row(reader).name}," in text and keep in text and "26 weeks" in text and "14 days" in text
    assert html.count(f'href="{keep}"') == 1 and html.count("Keep the verdicts coming") == 1
    assert batch.headers == {"List-Id": site.settings.list_id}
    assert person.headers["List-Unsubscribe"] == f"<http://testserver/u/{site.token(reader)}>"
    assert person.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert batch.custom_args == {"kind": "repermission"} and person.delivery_id is None
    assert site.client.get(keep.removeprefix("http://testserver")).status_code == 200


def test_the_letter_is_strict_mjml_and_scores_low_with_spamassassin(sqlite_url, tmp_path):
    "the reference validator (strict) accepts its MJML; the .eml the outbox writes scores under 2.0"
    settings = web_settings(sqlite_url, base_url="https://news.example.com")
    services = build_services(settings, transport=OutboxTransport(tmp_path / "outbox"), engine=make_engine(sqlite_url))
    (mjml := tmp_path / "repermission.mjml").write_text(render_letter(settings=settings, links=services.links).mjml)
    result = validate(mjml)
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    reader = add_subscribers(services.engine, 1)[0]
    with session_scope(services.engine) as session:
        for n in range(8):
            issue = Issue(week=f"2026-W{40 + n}", created_at=NOW)
            session.add(issue)
            session.flush()
            session.add(Delivery(issue_id=issue.id, subscriber_id=reader, segment_id=0, status="sent",
                                 sent_at=NOW - n * WEEK))

    assert sunset(services=services, now=NOW).asked == 1
    (eml,) = (tmp_path / "outbox").glob("*.eml")
    message = email.message_from_bytes(eml.read_bytes())
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click" and message["List-Id"]
    verdict = spamassassin(eml, tmp_path)
    assert verdict.score < MAX_SCORE, verdict.listing()


# -- the command and the scheduler --------------------------------------------------------------------------------

def test_the_command_says_how_many_were_asked_and_went_dormant(site, monkeypatch):
    "`digest subscribers sunset --dry-run` counts and changes nothing; without it, the pass asks"
    reader = site.reader(issues=0)
    with session_scope(site.engine) as session:  # the command's clock is the real one
        for back, (issue_id, segment_id) in enumerate(site.issues[-8:]):
            session.add(Delivery(issue_id=issue_id, subscriber_id=reader, segment_id=segment_id,
                                 status=DeliveryStatus.sent, sent_at=datetime.now(timezone.utc) - back * WEEK))
    for name_, value in (("DIGEST_DATABASE_URL", site.settings.database_url), ("DIGEST_SECRET_KEY", "k" * 32),
                         ("DIGEST_TRANSPORT", "outbox")):
        monkeypatch.setenv(name_, value)

    dry = CliRunner().invoke(cli, ["subscribers", "sunset", "--dry-run"])

    assert dry.exit_code == 0, dry.output
    assert "1 silent readers would be asked whether they still want the verdicts; 0 would go dormant" in dry.output
    assert site.row(reader).repermission_sent_at is None
    done = CliRunner().invoke(cli, ["subscribers", "sunset"])
    assert done.exit_code == 0, done.output
    assert "1 silent readers asked whether they still want the verdicts; 0 went dormant" in done.output
    assert site.row(reader).repermission_sent_at is not None


def test_the_scheduler_runs_the_sunset_daily():
    "the 'sunset' job fires every day at 04:30 in the configured zone"
    from zoneinfo import ZoneInfo

    from digest.config import Settings

    settings = Settings(timezone="Europe/Berlin", secret_key="k" * 32)
    jobs = {job.id: job for job in scheduler.build_scheduler(type("S", (), {"settings": settings})(), None).get_jobs()}
    trigger = jobs["sunset"].trigger
    first = trigger.get_next_fire_time(None, datetime(2026, 12, 1, 12, tzinfo=ZoneInfo("Europe/Berlin")))
    assert first == datetime(2026, 12, 2, 4, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    assert trigger.get_next_fire_time(first, first) - first == DAY


def test_digest_stats_counts_the_dormant_readers(site, monkeypatch):
    "after one reader goes dormant, `digest stats` says 'dormant readers: 1' and --json carries \"dormant\": 1"
    import json

    site.reader()
    site.run()
    site.run(after=14 * DAY)
    monkeypatch.setenv("DIGEST_DATABASE_URL", site.settings.database_url)

    table = CliRunner().invoke(cli, ["stats"])
    document = json.loads(CliRunner().invoke(cli, ["stats", "--json"]).output)

    assert table.exit_code == 0, table.output
    assert "dormant readers: 1" in table.output
    assert document["dormant"] == 1


def test_the_command_refuses_a_real_send_with_unsafe_links_before_doing_anything(site, monkeypatch):
    "SendGrid for real with DIGEST_BASE_URL http://127.0.0.1: one line, exit 2, nobody asked or made dormant"
    reader = site.reader()
    for name_, value in (("DIGEST_DATABASE_URL", site.settings.database_url), ("DIGEST_SECRET_KEY", "k" * 32),
                         ("DIGEST_TRANSPORT", "sendgrid"), ("SENDGRID_API_KEY", "SG.test"),
                         ("DIGEST_BASE_URL", "http://127.0.0.1:8000")):
        monkeypatch.setenv(name_, value)

    refused = CliRunner().invoke(cli, ["subscribers", "sunset"])

    assert refused.exit_code == 2, refused.output
    assert site.row(reader).repermission_sent_at is None
