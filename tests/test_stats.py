"""Per-issue figures (`digest stats`) counted in the database, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

from digest.cli.main import cli
from digest.track.stats import issue_stats
from storage.db import session_scope
from storage.models import Delivery, DeliveryStatus, Event
from tests.test_web_tracking import sent_delivery

SENT_AT = datetime(2026, 11, 26, 9, tzinfo=timezone.utc)


def add_events(engine, delivery, *kinds: str) -> None:
    """Events on a delivery; a kind ending in '!' is flagged machine."""
    with session_scope(engine) as session:
        for n, kind in enumerate(kinds):
            session.add(Event(kind=kind.rstrip("!"), machine=kind.endswith("!"), source="test",
                              occurred_at=SENT_AT + timedelta(minutes=n + 1), delivery_id=delivery.id,
                              subscriber_id=delivery.subscriber_id, issue_id=delivery.issue_id))


@pytest.fixture
def two_issues(engine):
    """Week 48: six deliveries with a story each; week 47: one sent delivery and no events at all."""
    d = [sent_delivery(engine, sent_at=SENT_AT, week="2026-W48") for _ in range(6)]
    add_events(engine, d[0], "delivered", "open!", "open", "open", "click", "click")  # read it, clicked twice
    add_events(engine, d[1], "delivered", "open!", "open!")  # only Apple's proxy / Gmail fetched it
    add_events(engine, d[2], "bounce")  # hard bounce
    add_events(engine, d[3], "delivered", "blocked", "unsubscribe", "unsubscribe")  # webhook + status change rows
    add_events(engine, d[4], "delivered", "spamreport", "click!")  # a link scanner's click is no clicker
    with session_scope(engine) as session:
        session.get(Delivery, d[5].id).status = DeliveryStatus.failed
    sent_delivery(engine, sent_at=SENT_AT - timedelta(days=7), week="2026-W47")
    return engine


def test_figures_count_people_once_and_keep_machines_apart(two_issues):
    "six deliveries with known stories: every figure and rate is what the stories add up to"
    week48, week47 = issue_stats(engine=two_issues)
    assert week48.week == "2026-W48" and week47.week == "2026-W47"
    assert (week48.recipients, week48.sent, week48.failed, week48.delivered) == (6, 5, 1, 4)
    assert (week48.bounced, week48.soft_bounced, week48.dropped) == (1, 1, 0)
    assert (week48.human_openers, week48.machine_only_openers, week48.opens, week48.machine_opens) == (1, 1, 5, 3)
    assert (week48.clickers, week48.clicks, week48.unsubscribes, week48.complaints) == (1, 3, 1, 1)
    assert week48.rate_base == "delivered"
    assert week48.rates == {"bounce": 0.2, "open": 0.25, "machine_only_open": 0.25, "click": 0.25,
                            "unsubscribe": 0.25, "complaint": 0.25}
    assert (week47.recipients, week47.sent, week47.delivered, week47.rate_base) == (1, 1, 0, "sent")
    assert week47.rates["open"] == 0.0


def test_one_week_only(two_issues):
    "--week narrows to that issue; an unknown week is an empty list"
    assert [s.week for s in issue_stats(engine=two_issues, week="2026-W47")] == ["2026-W47"]
    assert issue_stats(engine=two_issues, week="2025-W01") == []


def test_the_command_prints_a_table_and_json(two_issues, db_url):
    "`digest stats` shows both issues; --json gives the same figures for scripts; an unknown week is an error"
    env = {"DIGEST_DATABASE_URL": db_url}
    table = CliRunner().invoke(cli, ["stats"], env=env, terminal_width=250)
    assert table.exit_code == 0, table.output
    assert "2026-W48" in table.output and "2026-W47" in table.output and "25.0%" in table.output
    as_json = CliRunner().invoke(cli, ["stats", "--week", "2026-W48", "--json"], env=env)
    assert as_json.exit_code == 0, as_json.output
    [row] = json.loads(as_json.output)
    assert (row["week"], row["human_openers"], row["rate_base"], row["rates"]["click"]) == ("2026-W48", 1, "delivered", 0.25)
    missing = CliRunner().invoke(cli, ["stats", "--week", "2025-W01"], env=env)
    assert missing.exit_code == 1 and "no issue for week 2025-W01" in missing.output
