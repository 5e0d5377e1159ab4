"""Pausing, resuming and cancelling an issue's send (issue 18, item 3), on SQLite and PostgreSQL: the send loop,
the weekly run, the scheduler's catch-up and a worker pass over a paused issue; `digest issue …`, `digest send`,
`digest stats`, the dry run and the preview page say the state and why."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from fastapi.testclient import TestClient
from typer.testing import CliRunner

import scheduler
from digest.claim.opening import open_issue
from digest.cli.main import cli
from digest.config import Settings
from digest.editor.desk import create_editor_app
from digest.send.worker import Worker
from digest.weekly import run
from storage.db import session_scope
from storage.deliveries import claim_batch, status_counts
from storage.issue_state import cancel_issue, pause_issue, resume_issue
from storage.issues import find_issue, unfinished_issues
from storage.models import Delivery, DeliveryStatus, Issue
from tests.factories import RecordingTransport, add_comparison, add_subscribers, build_sender

UTC = timezone.utc
WEEK = "2026-W48"
OPENED = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)  # the week's default slot
PAUSED_AT = OPENED + timedelta(minutes=3)
GUARDRAIL = "guardrail: bounce rate 7.2% of 500 processed (limit 5%)"


class PausingTransport(RecordingTransport):
    """Takes every batch; pauses the issue through the store during the ``at``-th, as the guardrail would."""

    def __init__(self, engine, *, at: int = 2, reason: str = GUARDRAIL):
        super().__init__()
        self.engine, self.at, self.reason = engine, at, reason

    def send(self, batch):
        result = super().send(batch)
        if self.calls == self.at:
            with session_scope(self.engine) as session:
                issue = find_issue(session=session, week=WEEK)
                assert pause_issue(session=session, issue_id=issue.id, reason=self.reason, now=PAUSED_AT)
        return result


@pytest.fixture
def settings(db_url, tmp_path):
    return Settings(database_url=db_url, secret_key="k" * 32, base_url="https://news.example.com", batch_size=2,
                    outbox_dir=tmp_path / "outbox", transport="outbox", timezone="UTC")


@pytest.fixture
def engine(settings):
    yield (engine := build_sender(settings).services.engine)
    engine.dispose()


def sender_with(settings, transport):
    return build_sender(settings, transport=transport, sleep=lambda s: None)


def opened(engine, readers: int = 6) -> int:
    """Week 48 opened with ``readers`` pending deliveries (batches of 2: three batches for six)."""
    add_comparison(engine, published_at=OPENED - timedelta(days=1), category="Writing")
    add_subscribers(engine, readers, categories=["Writing"])
    return open_issue(engine=engine, week=WEEK, now=OPENED).issue.id


def statuses(engine) -> dict[str, int]:
    """Week 48's deliveries by status."""
    with session_scope(engine) as session:
        return status_counts(session=session, issue_id=find_issue(session=session, week=WEEK).id)


def paused_half_way(settings, engine) -> PausingTransport:
    """Six readers, the issue paused while its second batch is in flight: four sent, two pending."""
    opened(engine)
    transport = PausingTransport(engine)
    report = sender_with(settings, transport).send_issue(issue(engine))
    assert report.halted == f"paused: {GUARDRAIL}"
    return transport


def issue(engine) -> Issue:
    with session_scope(engine) as session:
        return find_issue(session=session, week=WEEK)


# -- the send loop, the weekly run, the scheduler and a worker ---------------------------------------------------

def test_a_pause_during_the_second_batch_stops_the_send_after_it(settings, engine):
    "paused while batch 2 of 3 is in flight: exactly two batches go out, two readers wait, the issue is not done"
    transport = paused_half_way(settings, engine)
    assert len(transport.batches) == 2 and len(transport.recipients) == 4
    assert statuses(engine) == {"sent": 4, "pending": 2}
    assert issue(engine).completed_at is None


def test_the_weekly_run_and_a_worker_pass_over_a_paused_issue_and_say_why(settings, engine, caplog):
    "after the pause, neither the weekly run (this week's or the scheduler's) nor a worker sends; both say it is paused"
    caplog.set_level(logging.INFO)
    paused_half_way(settings, engine)
    later = RecordingTransport()
    sender = sender_with(settings, later)
    with session_scope(engine) as session:
        assert unfinished_issues(session=session) == []
    asked = run(services=sender.services, sender=sender, now=OPENED + timedelta(hours=2), week=WEEK)
    expected = (f"issue {WEEK} is paused since 2026-11-26 09:03 UTC ({GUARDRAIL}): nothing more is sent until "
                f"`digest issue resume {WEEK}`")
    assert asked.held == {WEEK: expected} and asked.reports == []
    by_schedule = run(services=sender.services, sender=sender, now=OPENED + timedelta(hours=3))
    assert by_schedule.held == {WEEK: expected} and by_schedule.reports == []
    report = Worker(services=sender.services, sender=sender, idle_seconds=0.01).run(once=True)
    assert (report.sent, later.calls) == (0, 0)
    assert statuses(engine) == {"sent": 4, "pending": 2}
    logged = [r.getMessage() for r in caplog.records if r.name in ("digest.weekly", "digest.worker")]
    assert logged.count(expected) >= 3, logged


def test_the_scheduler_catch_up_never_resumes_a_paused_issue(settings, engine, caplog):
    "the scheduler's hourly tick, three times: nothing is sent, the pause stays, and its log says why each time"
    caplog.set_level(logging.INFO)
    paused_half_way(settings, engine)
    later = RecordingTransport()
    sender = sender_with(settings, later)
    for _ in range(3):
        assert scheduler.weekly_job(sender.services, sender)
    assert later.calls == 0 and statuses(engine) == {"sent": 4, "pending": 2}
    assert issue(engine).paused_at is not None
    said = [r.getMessage() for r in caplog.records if "is paused since" in r.getMessage()]
    assert len(said) == 3 and GUARDRAIL in said[0]


def test_resume_then_send_finishes_the_issue_exactly_once(settings, engine):
    "resumed by hand, the next send sends the two left and closes the issue; a second send sends nothing"
    first = paused_half_way(settings, engine)
    issue_id = issue(engine).id
    with session_scope(engine) as session:
        assert resume_issue(session=session, issue_id=issue_id, now=OPENED + timedelta(hours=1))
    later = RecordingTransport()
    sender = sender_with(settings, later)
    result = run(services=sender.services, sender=sender, now=OPENED + timedelta(hours=2), week=WEEK)
    assert [(r.week, r.sent, r.halted) for r in result.reports] == [(WEEK, 2, None)] and result.held == {}
    assert sorted(first.recipients + later.recipients) == sorted(set(first.recipients + later.recipients))
    assert len(first.recipients + later.recipients) == 6 and issue(engine).completed_at is not None
    again = run(services=sender.services, sender=sender, now=OPENED + timedelta(hours=3), week=WEEK)
    assert again.reason == f"issue {WEEK} was already sent" and later.calls == 1


def test_cancel_turns_pending_into_cancelled_and_leaves_sent_alone(settings, engine):
    "cancelled after four of six went out: two cancelled and counted, the four sent unchanged, the issue finished"
    paused_half_way(settings, engine)
    issue_id = issue(engine).id
    with session_scope(engine) as session:
        before = {d.id: (d.status, d.sent_at, d.message_id) for d in session.scalars(select(Delivery))}
        assert cancel_issue(session=session, issue_id=issue_id, now=PAUSED_AT + timedelta(minutes=5)) == 2
    with session_scope(engine) as session:
        after = {d.id: (d.status, d.sent_at, d.message_id) for d in session.scalars(select(Delivery))}
    assert {i: row for i, row in after.items() if row[0] == DeliveryStatus.sent} == \
        {i: row for i, row in before.items() if row[0] == DeliveryStatus.sent}
    assert statuses(engine) == {"sent": 4, "cancelled": 2}
    assert issue(engine).completed_at is not None and issue(engine).cancelled_at is not None
    sender = sender_with(settings, RecordingTransport())
    result = run(services=sender.services, sender=sender, now=OPENED + timedelta(hours=2), week=WEEK)
    assert result.reports == [] and "was cancelled on 2026-11-26 09:08 UTC" in result.held[WEEK]


# -- the commands ------------------------------------------------------------------------------------------------

def digest(*args: str, settings, input: str | None = None):
    env = {"DIGEST_DATABASE_URL": settings.database_url, "DIGEST_SECRET_KEY": "k" * 32, "DIGEST_TRANSPORT": "outbox",
           "DIGEST_OUTBOX_DIR": str(settings.outbox_dir), "DIGEST_TIMEZONE": "UTC", "DIGEST_BATCH_SIZE": "2",
           "DIGEST_BASE_URL": "https://news.example.com"}
    return CliRunner().invoke(cli, list(args), env=env, input=input, terminal_width=300)


def outbox(settings) -> int:
    return len(list(settings.outbox_dir.glob("*.eml"))) if settings.outbox_dir.exists() else 0


def test_pause_then_send_sends_nothing_and_exits_1_until_resume(settings, engine, caplog, monkeypatch, tmp_path):
    "paused by hand with a reason: `digest send --week` says so and exits 1; after resume it sends all three, once"
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO, logger="digest.issue")
    opened(engine, readers=3)
    paused = digest("issue", "pause", WEEK, "--reason", "wrong price for Quill", settings=settings)
    assert paused.exit_code == 0, paused.output
    why = "paused by hand: wrong price for Quill"
    assert paused.stdout.startswith(f"issue {WEEK} paused ({why}): 3 deliveries wait;")
    assert any(f"issue {WEEK} paused by hand (" in r.getMessage() and why in r.getMessage() for r in caplog.records)
    assert issue(engine).pause_reason == why

    held = digest("send", "--week", WEEK, settings=settings)
    assert held.exit_code == 1 and outbox(settings) == 0
    assert f"issue {WEEK} is paused since " in held.stdout and f"({why}): nothing more is sent until " \
        f"`digest issue resume {WEEK}`" in held.stdout

    resumed = digest("issue", "resume", WEEK, settings=settings)
    assert resumed.exit_code == 0, resumed.output
    assert f"issue {WEEK} resumed (paused since " in resumed.stdout and f"{why}): 3 deliveries left;" in resumed.stdout
    sent = digest("send", "--week", WEEK, settings=settings)
    assert sent.exit_code == 0, sent.output
    again = digest("send", "--week", WEEK, settings=settings)
    assert again.exit_code == 0 and f"issue {WEEK} was already sent" in again.stdout
    assert outbox(settings) == 3 and statuses(engine) == {"sent": 3}


def test_the_commands_answer_each_case_in_one_line_with_its_exit_code(settings, engine, caplog):
    "no issue, a bad week, a pause twice, a resume of an issue not paused, cancel asked and refused, cancel confirmed"
    caplog.set_level(logging.INFO, logger="digest.issue")
    opened(engine, readers=3)
    missing = digest("issue", "pause", "2025-W01", settings=settings)
    assert missing.exit_code == 2 and "no issue for week 2025-W01" in missing.stderr
    assert digest("issue", "cancel", "banana", settings=settings).exit_code == 2
    assert digest("issue", "resume", WEEK, settings=settings).stdout.strip() == \
        f"issue {WEEK} is not paused (it is sending): nothing to resume"
    assert digest("issue", "pause", WEEK, settings=settings).exit_code == 0
    twice = digest("issue", "pause", WEEK, "--reason", "another", settings=settings)
    assert twice.exit_code == 0 and "(paused by hand): nothing more is sent" in twice.stdout and "already" in twice.stdout
    assert issue(engine).pause_reason == "paused by hand"  # the first reason stands

    refused = digest("issue", "cancel", WEEK, settings=settings, input="n\n")
    assert refused.exit_code == 1 and statuses(engine) == {"pending": 3}
    assert f"issue {WEEK}: 3 pending deliveries would be cancelled; 0 already sent stay sent" in refused.stdout
    assert f"issue {WEEK} not cancelled: nothing changed" in refused.stderr
    done = digest("issue", "cancel", WEEK, settings=settings, input="y\n")
    assert done.exit_code == 0, done.output
    assert f"issue {WEEK} cancelled: 3 pending deliveries cancelled, never to be sent; nothing sent changes (0 sent)" \
        in done.stdout
    assert statuses(engine) == {"cancelled": 3} and issue(engine).completed_at is not None
    assert any("cancelled by hand (" in r.getMessage() for r in caplog.records)

    assert digest("issue", "cancel", WEEK, "--yes", settings=settings).exit_code == 0  # already: nothing changes
    resume = digest("issue", "resume", WEEK, settings=settings)
    assert resume.exit_code == 1 and "a cancelled issue cannot be resumed" in resume.stderr
    pause = digest("issue", "pause", WEEK, settings=settings)
    assert pause.exit_code == 1 and f"issue {WEEK} was cancelled on " in pause.stderr


def test_a_finished_issue_cannot_be_paused_or_cancelled(settings, engine):
    "every delivery went out: pause and cancel say it is finished, exit 1, and nothing changes"
    opened(engine, readers=2)
    sender = sender_with(settings, RecordingTransport())
    assert sender.send_issue(issue(engine)).sent == 2
    pause = digest("issue", "pause", WEEK, settings=settings)
    assert pause.exit_code == 1 and f"issue {WEEK} is finished" in pause.stderr and "nothing to pause" in pause.stderr
    cancel = digest("issue", "cancel", WEEK, "--yes", settings=settings)
    assert cancel.exit_code == 1 and "nothing to cancel" in cancel.stderr
    assert issue(engine).paused_at is None and issue(engine).cancelled_at is None


# -- where the state shows ---------------------------------------------------------------------------------------

def test_stats_the_dry_run_and_the_preview_page_show_the_pause_and_its_reason(settings, engine):
    "paused by the guardrail after four of six: stats, the dry run (text and JSON) and the editor's page say why"
    paused_half_way(settings, engine)
    stats = digest("stats", settings=settings)
    assert stats.exit_code == 0, stats.output
    assert f"issue {WEEK} is paused since 2026-11-26 09:03 UTC ({GUARDRAIL})" in stats.stdout
    [row] = json.loads(digest("stats", "--json", settings=settings).stdout)["issues"]
    assert (row["state"], row["state_reason"], row["state_since"]) == ("paused", GUARDRAIL, PAUSED_AT.isoformat())

    dry = digest("send", "--dry-run", "--week", WEEK, settings=settings)
    assert dry.exit_code == 0, dry.output
    assert dry.stdout.splitlines()[0] == (
        f"issue {WEEK} is paused since 2026-11-26 09:03 UTC ({GUARDRAIL}): nothing more is sent until "
        f"`digest issue resume {WEEK}`; resuming would send the 2 deliveries left")
    assert "`digest send` finishes it" not in dry.stdout
    as_json = json.loads(digest("send", "--dry-run", "--json", "--week", WEEK, settings=settings).stdout)
    assert (as_json["state"], as_json["state_reason"], as_json["to_send"]) == ("paused", GUARDRAIL, 2)

    sender = sender_with(settings, RecordingTransport())
    page = TestClient(create_editor_app(sender.services), base_url="http://127.0.0.1:8001").get(f"/?week={WEEK}")
    assert page.status_code == 200
    assert '<p class="state state-paused" role="status"><strong>Paused</strong>' in page.text
    assert GUARDRAIL in page.text and "resuming would send the 2 deliveries left" in page.text


def test_stats_the_dry_run_and_the_preview_page_show_a_cancel(settings, engine):
    "cancelled after four of six: stats says cancelled, the dry run and the page say so and nothing more goes out"
    paused_half_way(settings, engine)
    assert digest("issue", "cancel", WEEK, "--yes", settings=settings).exit_code == 0
    [row] = json.loads(digest("stats", "--json", settings=settings).stdout)["issues"]
    assert (row["state"], row["state_reason"], row["sent"]) == ("cancelled", "cancelled by hand", 4)
    dry = digest("send", "--dry-run", "--week", WEEK, settings=settings)
    assert dry.stdout.splitlines()[0].startswith(f"issue {WEEK} was cancelled on ")
    assert dry.stdout.splitlines()[0].endswith("nothing more is sent, and it cannot be resumed "
                                               "(2 deliveries cancelled, 4 sent before)")
    sender = sender_with(settings, RecordingTransport())
    page = TestClient(create_editor_app(sender.services), base_url="http://127.0.0.1:8001").get(f"/?week={WEEK}")
    assert '<strong>Cancelled</strong>' in page.text and "2 deliveries cancelled, 4 sent before" in page.text
    send = digest("send", "--week", WEEK, settings=settings)
    assert send.exit_code == 1 and f"issue {WEEK} was cancelled on " in send.stdout and outbox(settings) == 0


# -- issues a worker has nothing to say about ----------------------------------------------------------------------

@pytest.mark.parametrize("paused_first", [False, True], ids=["cancelled", "paused then cancelled"])
def test_an_issue_cancelled_while_another_sender_held_a_batch_is_neither_sent_nor_called_paused(
        settings, engine, caplog, paused_first):
    "not finished yet (a batch is out), but cancelled: a worker does not send it, nor log it as paused until resumed"
    issue_id = opened(engine)
    with session_scope(engine) as session:
        assert claim_batch(session=session, issue_id=issue_id, owner="gone-host:1", now=OPENED,
                           lease_until=OPENED + timedelta(hours=1), limit=2).rows
    with session_scope(engine) as session:
        if paused_first:
            assert pause_issue(session=session, issue_id=issue_id, reason=GUARDRAIL, now=PAUSED_AT)
        assert cancel_issue(session=session, issue_id=issue_id, now=PAUSED_AT + timedelta(minutes=1)) == 4
    assert issue(engine).completed_at is None  # the held batch is not closed yet
    caplog.set_level(logging.INFO)
    later = RecordingTransport()
    sender = sender_with(settings, later)
    Worker(services=sender.services, sender=sender, idle_seconds=0.01).run(once=True)
    assert later.calls == 0 and statuses(engine) == {"sending": 2, "cancelled": 4}
    assert [r.getMessage() for r in caplog.records if WEEK in r.getMessage()] == []


def test_an_issue_paused_as_its_last_batch_went_out_is_finished_and_not_called_paused(settings, engine, caplog):
    "the pause came during the last batch: nothing is left to resume, so a worker's log does not ask for a resume"
    opened(engine)
    report = sender_with(settings, PausingTransport(engine, at=3)).send_issue(issue(engine))
    assert report.sent == 6 and statuses(engine) == {"sent": 6}
    assert issue(engine).paused_at is not None and issue(engine).completed_at is not None
    caplog.set_level(logging.INFO)
    sender = sender_with(settings, later := RecordingTransport())
    Worker(services=sender.services, sender=sender, idle_seconds=0.01).run(once=True)
    assert later.calls == 0
    assert [r.getMessage() for r in caplog.records if "is paused since" in r.getMessage()] == []
