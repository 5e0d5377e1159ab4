"""Issue 21, item 3: `digest stats` shows how far behind SendGrid's Event Webhook is, per issue, on SQLite and
PostgreSQL: events received, when the newest happened, and the emails sent with no outcome reported yet."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from typer.testing import CliRunner

from digest.cli.main import cli
from digest.track.events import apply_provider_events
from digest.track.stats import issue_stats
from digest.transports.sendgrid_events import read_events
from tests.test_web_tracking import sent_delivery


def sendgrid(delivery, name: str, event_id: str, at: datetime, **extra) -> dict:
    return {"event": name, "sg_event_id": event_id, "timestamp": int(at.timestamp()), "email": delivery.email,
            "delivery_id": str(delivery.id), **extra}


def test_stats_give_each_issues_webhook_events_their_newest_time_and_the_emails_still_without_an_outcome(engine, db_url):
    "four emails sent; the webhook reported processed + delivered for two, a bounce for one, 25 min ago at the latest: 5 events, newest 25 min old, one without outcome"
    now = datetime.now(timezone.utc).replace(microsecond=0)
    sent_at = now - timedelta(hours=1)
    d = [sent_delivery(engine, sent_at=sent_at, week="2026-W48") for _ in range(4)]
    quiet = sent_delivery(engine, sent_at=sent_at, week="2026-W47")  # no webhook yet: nothing "waiting"
    at = now - timedelta(minutes=25)
    items = [sendgrid(d[0], "processed", "a1", at - timedelta(minutes=5)),
             sendgrid(d[0], "delivered", "a2", at - timedelta(minutes=4)),
             sendgrid(d[1], "delivered", "b1", at - timedelta(minutes=3)),
             sendgrid(d[2], "bounce", "c1", at, type="bounce", reason="550 no such user"),
             sendgrid(d[3], "processed", "d1", at - timedelta(minutes=10))]
    summary = apply_provider_events(engine=engine, events=read_events(items, now=now), now=now)
    assert summary.applied == 5

    week48, week47 = issue_stats(engine=engine)
    assert (week48.week, week48.webhook_events, week48.newest_event_at, week48.awaiting_outcome) == (
        "2026-W48", 5, at, 1)
    assert week48.newest_event_age(now) == 25 * 60
    assert (week47.week, week47.webhook_events, week47.newest_event_at, week47.awaiting_outcome) == (
        "2026-W47", 0, None, None)
    assert quiet.issue_id != d[0].issue_id

    env = {"DIGEST_DATABASE_URL": db_url}
    [row] = json.loads(CliRunner().invoke(cli, ["stats", "--week", "2026-W48", "--json"], env=env).output)["issues"]
    assert (row["webhook_events"], row["newest_event_at"], row["awaiting_outcome"]) == (5, at.isoformat(), 1)
    assert 25 * 60 <= row["newest_event_age_seconds"] < 25 * 60 + 60
    table = CliRunner().invoke(cli, ["stats"], env=env, terminal_width=250)
    assert table.exit_code == 0, table.output
    assert "webhook 2026-W48: 5 events, the newest happened 25 min ago" in table.output
    assert "1 sent, no outcome yet" in table.output and "webhook 2026-W47" not in table.output
