"""`digest send --dry-run` names who gets nothing and why, and says so when the issue already went out."""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone

import pytest
from rich.console import Console
from sqlalchemy import select, update
from typer.testing import CliRunner

from tests.factories import build_sender
from digest.cli.main import cli
from digest.config import Settings
from digest.editor.dry_run import dry_run
from digest.cli.reporting import print_dry_run
from digest.claim.weeks import iso_week
from digest.weekly import run
from storage.db import session_scope
from storage.models import Subscriber, SubscriberStatus
from tests.factories import add_comparison, add_subscribers

NOW = datetime.now(timezone.utc)
WEEK = iso_week(NOW)


@pytest.fixture
def sender(db_url, tmp_path):
    settings = Settings(database_url=db_url, secret_key="k" * 32, outbox_dir=tmp_path / "outbox", timezone="UTC")
    sender = build_sender(settings)
    add_comparison(sender.services.engine, published_at=NOW - timedelta(days=1), title="Quill vs Inkwell", category="Writing")
    yield sender
    sender.services.engine.dispose()


def emails(engine, ids) -> list[str]:
    with session_scope(engine) as session:
        return [session.get(Subscriber, i).email for i in ids]


def printed(plan) -> list[str]:
    console = Console(width=200, record=True, file=io.StringIO())
    print_dry_run(console, plan, tz=timezone.utc)
    return console.export_text().splitlines()


def test_every_reason_for_getting_nothing_is_named_with_the_address(sender, db_url):
    "a reader of each kind: the one who follows Writing gets it; the others are listed with their reason, then counted"
    engine = sender.services.engine
    add_subscribers(engine, 1, categories=["Writing"], prefix="reader")
    [security] = add_subscribers(engine, 1, categories=["Security"], prefix="sec")
    [pending] = add_subscribers(engine, 1, status=SubscriberStatus.pending, prefix="pend")
    [paused] = add_subscribers(engine, 1, prefix="pause")
    left = {status: add_subscribers(engine, 1, status=status, prefix=status.value)[0]
            for status in (SubscriberStatus.unsubscribed, SubscriberStatus.bounced, SubscriberStatus.complained)}
    until = NOW + timedelta(weeks=2)
    with session_scope(engine) as session:
        session.execute(update(Subscriber).where(Subscriber.id == paused).values(paused_until=until))

    plan = dry_run(services=sender.services, week=None, now=NOW)

    assert plan.nothing == {"no matching category": 1, "pending confirmation": 1, "paused": 1, "unsubscribed": 1,
                            "bounced": 1, "complained": 1}
    [sec, pend, pau, unsub, bounced, complained] = emails(engine, [security, pending, paused, *left.values()])
    assert printed(plan)[-8:] == [
        "get nothing: 6",
        f"  {sec}: no matching category",
        f"  {pend}: pending confirmation",
        f"  {pau}: paused until {until.date().isoformat()}",
        f"  {unsub}: unsubscribed",
        f"  {bounced}: bounced",
        f"  {complained}: complained",
        "  by reason: 1 no matching category, 1 pending confirmation, 1 paused, 1 unsubscribed, 1 bounced, 1 complained",
    ]


def test_the_list_stops_at_50_and_json_names_everyone(sender, db_url):
    "60 unsubscribed and 5 following nothing in the issue: the text names the first 50 (unmatched first), --json all 65"
    engine = sender.services.engine
    add_subscribers(engine, 2, categories=["Writing"])
    unmatched = add_subscribers(engine, 5, categories=["Security"], prefix="sec")
    add_subscribers(engine, 60, status=SubscriberStatus.unsubscribed, prefix="gone")

    lines = printed(dry_run(services=sender.services, week=None, now=NOW))
    start = lines.index("get nothing: 65 (the first 50; --json lists all)")
    listed = lines[start + 1:-1]
    assert len(listed) == 50
    assert listed[:5] == [f"  {email}: no matching category" for email in sorted(emails(engine, unmatched))]
    assert all(line.endswith(": unsubscribed") for line in listed[5:])
    assert lines[-1] == "  by reason: 5 no matching category, 60 unsubscribed"

    done = CliRunner().invoke(cli, ["send", "--dry-run", "--json"], env={"DIGEST_DATABASE_URL": db_url})
    assert done.exit_code == 0, done.output
    found = json.loads(done.stdout)
    assert found["get_nothing"]["counts"] == {"no matching category": 5, "unsubscribed": 60}
    assert len(found["get_nothing"]["people"]) == 65
    assert found["recipients"] == 2 and found["comparisons"] == ["Quill vs Inkwell"]


def test_a_dry_run_of_an_issue_already_sent_says_so_instead_of_a_table(sender, db_url):
    "this week's issue went out to 3 readers: the dry run says when and to how many, points to stats, exit 0"
    add_subscribers(sender.services.engine, 3, categories=["Writing"])
    add_subscribers(sender.services.engine, 1, status=SubscriberStatus.unsubscribed)
    result = run(services=sender.services, sender=sender, now=NOW, week=WEEK)
    assert result.reports[0].sent == 3

    env = {"DIGEST_DATABASE_URL": db_url, "DIGEST_TIMEZONE": "UTC"}
    done = CliRunner().invoke(cli, ["send", "--dry-run"], env=env)
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines() == [
        f"issue {WEEK} was sent on {NOW:%a %d %b %Y} to 3 readers: nothing to dry-run; "
        f"`digest stats --week {WEEK}` shows how it did"]
    as_json = CliRunner().invoke(cli, ["send", "--dry-run", "--json", "--week", WEEK], env=env)
    assert json.loads(as_json.stdout)["already_sent"]["readers"] == 3


def test_json_without_dry_run_is_refused(db_url):
    "--json alone would be ignored by a real send: one line, exit 2, nothing sent"
    done = CliRunner().invoke(cli, ["send", "--json"], env={"DIGEST_DATABASE_URL": db_url})
    assert done.exit_code == 2
    assert done.stderr.splitlines() == ["error: --json goes with --dry-run: digest send --dry-run --json"]


def interrupt_after_all_but_one(sender) -> None:
    """Make the week's sent issue look interrupted: one delivery back to pending, the issue not closed."""
    from storage.models import Delivery, DeliveryStatus, Issue

    with session_scope(sender.services.engine) as session:
        one = session.execute(select(Delivery.id).limit(1)).scalar_one()
        session.execute(update(Delivery).where(Delivery.id == one).values(status=DeliveryStatus.pending.value))
        session.execute(update(Issue).values(completed_at=None))


def test_an_issue_half_sent_or_closed_with_nobody_is_described_too(sender):
    "interrupted after 2 of 3, or opened with nobody to send to: the dry run says which, not a table"
    add_subscribers(sender.services.engine, 3, categories=["Writing"])
    run(services=sender.services, sender=sender, now=NOW, week=WEEK)
    interrupt_after_all_but_one(sender)
    assert printed(dry_run(services=sender.services, week=WEEK, now=NOW)) == [
        f"issue {WEEK} was sent on {NOW:%a %d %b %Y} to 2 readers, 1 still to send: nothing to dry-run; "
        f"`digest send` finishes it, `digest stats --week {WEEK}` shows how it did"]

    add_comparison(sender.services.engine, published_at=NOW, title="Lens vs Prism", category="Image & Video")
    later = NOW + timedelta(weeks=1)
    run(services=sender.services, sender=sender, now=later, week=iso_week(later))  # nobody follows Image & Video: closed at once
    assert printed(dry_run(services=sender.services, week=iso_week(later), now=later)) == [
        f"issue {iso_week(later)} was closed on {later:%a %d %b %Y} with nobody to send to: nothing to dry-run"]


def test_the_preview_page_of_a_sent_issue_says_it_went_out(sender):
    "the editor's page for a week already sent: the dry run's sentence instead of an empty who-gets-what table"
    from fastapi.testclient import TestClient

    from digest.editor.desk import create_editor_app

    add_subscribers(sender.services.engine, 2, categories=["Writing"])
    run(services=sender.services, sender=sender, now=NOW, week=WEEK)
    page = TestClient(create_editor_app(sender.services), base_url="http://127.0.0.1:8001").get(f"/?week={WEEK}")
    assert page.status_code == 200
    assert f"issue {WEEK} was sent on {NOW:%a %d %b %Y} to 2 readers: nothing to dry-run" in page.text
    assert "Get nothing" not in page.text


def test_a_send_that_finishes_an_interrupted_issue_does_not_call_it_already_sent(sender):
    "this week's issue was interrupted; `digest send` resumes and finishes it: its report, not 'was already sent'"
    add_subscribers(sender.services.engine, 2, categories=["Writing"])
    run(services=sender.services, sender=sender, now=NOW, week=WEEK)
    interrupt_after_all_but_one(sender)
    again = run(services=sender.services, sender=sender, now=NOW, week=WEEK)
    assert [(report.week, report.sent) for report in again.reports] == [(WEEK, 1)]
    assert again.reason == ""
    assert run(services=sender.services, sender=sender, now=NOW, week=WEEK).reason == f"issue {WEEK} was already sent"
