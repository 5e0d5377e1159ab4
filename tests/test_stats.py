"""Per-issue figures (`digest stats`) counted in the database, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from digest.claim.opening import open_issue
from digest.cli.main import cli
from digest.cli.stats import push_line
from digest.track.stats import issue_stats, site_push_status
from digest.votes.casting import ballot, cast_vote
from storage.db import session_scope
from storage.models import Delivery, DeliveryStatus, Event, Issue, SitePush, Subscriber, VoteEvent
from tests.factories import add_comparison, add_subscribers
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
    assert (week48.votes, week48.voters) == (0, 0)
    assert week48.rates == {"bounce": 0.2, "open": 0.25, "machine_only_open": 0.25, "click": 0.25, "vote": 0.0,
                            "unsubscribe": 0.25, "complaint": 0.25}
    assert (week47.recipients, week47.sent, week47.delivered, week47.rate_base) == (1, 1, 0, "sent")
    assert week47.rates["open"] == 0.0


def test_one_week_only(two_issues):
    "--week narrows to that issue; an unknown week is an empty list"
    assert [s.week for s in issue_stats(engine=two_issues, week="2026-W47")] == ["2026-W47"]
    assert issue_stats(engine=two_issues, week="2025-W01") == []


def test_the_command_prints_a_table_and_json(two_issues, db_url):
    "`digest stats` shows both issues; --json gives the same figures for scripts (no site push without a URL); an unknown week is an error"
    env = {"DIGEST_DATABASE_URL": db_url}
    table = CliRunner().invoke(cli, ["stats"], env=env, terminal_width=250)
    assert table.exit_code == 0, table.output
    assert "2026-W48" in table.output and "2026-W47" in table.output and "25.0%" in table.output
    as_json = CliRunner().invoke(cli, ["stats", "--week", "2026-W48", "--json"], env=env)
    assert as_json.exit_code == 0, as_json.output
    document = json.loads(as_json.output)
    assert document["site_push"] is None and "site push" not in table.output
    [row] = document["issues"]
    assert (row["week"], row["human_openers"], row["rate_base"], row["rates"]["click"]) == ("2026-W48", 1, "delivered", 0.25)
    missing = CliRunner().invoke(cli, ["stats", "--week", "2025-W01"], env=env)
    assert missing.exit_code == 1 and "no issue for week 2025-W01" in missing.output


# -- readers' votes (issue 17) --------------------------------------------------------------------------------

SLUG = "cellmind-vs-quill"
SITE = "https://verdicts.example.com/hooks/votes"


def cast(engine, reader: int, tool: str, choice: str, *, week: str | None, now=SENT_AT) -> str:
    """The reader votes as the link in the email of issue ``week`` would have it (None: no known issue)."""
    with session_scope(engine) as session:
        issue_id = session.scalar(select(Issue.id).where(Issue.week == week)) if week else None
        asked = ballot(session=session, slug=SLUG, tool=tool, choice=choice)
        return cast_vote(session=session, secret_key="k" * 32, subscriber=session.get(Subscriber, reader),
                         issue_id=issue_id, ballot=asked, now=now)


@dataclass
class Sent:
    id: int
    subscriber_id: int
    issue_id: int


def deliveries_of(engine, week: str) -> dict[int, Sent]:
    """subscriber id → their delivery of issue ``week``, marked sent (so the rates are of sent)."""
    with session_scope(engine) as session:
        rows = session.scalars(select(Delivery).join(Issue, Issue.id == Delivery.issue_id).where(Issue.week == week))
        sent = {}
        for delivery in rows:
            delivery.status = DeliveryStatus.sent
            sent[delivery.subscriber_id] = Sent(delivery.id, delivery.subscriber_id, delivery.issue_id)
        return sent


@pytest.fixture
def voted(engine):
    """Week 48 to four readers of one comparison. Ada clicked twice and voted on both tools (ship, then skip
    on tool 1); Bo voted without clicking; Cy clicked and did not vote; Di's only click was a link scanner's,
    and her one vote came from no known issue."""
    add_comparison(engine, slug=SLUG, published_at=SENT_AT - timedelta(days=1))
    ada, bo, cy, di = add_subscribers(engine, 4)
    open_issue(engine=engine, week="2026-W48", now=SENT_AT)
    delivery = deliveries_of(engine, "2026-W48")
    add_events(engine, delivery[ada], "click", "click")
    add_events(engine, delivery[cy], "click")
    add_events(engine, delivery[di], "click!")
    assert [cast(engine, ada, "1", "ship", week="2026-W48"), cast(engine, ada, "1", "skip", week="2026-W48"),
            cast(engine, ada, "2", "skip", week="2026-W48"), cast(engine, bo, "1", "ship", week="2026-W48"),
            cast(engine, di, "2", "ship", week=None)] == ["recorded", "changed", "recorded", "recorded", "recorded"]
    return engine


def test_votes_and_voters_per_issue_and_a_vote_is_a_click(voted):
    "three standing votes by two readers from week 48's email; Ada (clicked and voted) and Bo (only voted) and Cy are the clickers, once each"
    [week48] = issue_stats(engine=voted)
    assert (week48.votes, week48.voters) == (3, 2)  # Ada's change is one standing vote; Di's names no issue
    assert (week48.clickers, week48.clicks) == (3, 4)  # clicks stay click events: Ada 2, Cy 1, the scanner 1
    assert (week48.sent, week48.rate_base) == (4, "sent")
    assert (week48.rates["click"], week48.rates["vote"]) == (0.75, 0.5)


def test_a_reader_who_only_voted_counts_once_as_a_clicker(engine):
    "Bo votes on both tools and never clicks: one clicker, two votes, one voter"
    add_comparison(engine, slug=SLUG, published_at=SENT_AT - timedelta(days=1))
    [bo] = add_subscribers(engine, 1)
    open_issue(engine=engine, week="2026-W48", now=SENT_AT)
    deliveries_of(engine, "2026-W48")
    cast(engine, bo, "1", "ship", week="2026-W48")
    cast(engine, bo, "2", "skip", week="2026-W48")
    [week48] = issue_stats(engine=engine)
    assert (week48.clickers, week48.clicks, week48.votes, week48.voters) == (1, 0, 2, 1)


def test_the_command_shows_votes_and_voters(voted, db_url):
    "`digest stats` has votes and voters rows; --json carries them per issue"
    env = {"DIGEST_DATABASE_URL": db_url}
    table = CliRunner().invoke(cli, ["stats"], env=env, terminal_width=250)
    assert table.exit_code == 0, table.output
    lines = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in table.output.splitlines()
             if line.count("│") >= 3}
    assert (lines["votes"], lines["voters"], lines["clickers (incl. voters)"]) == ("3", "2 · 50.0%", "3 · 75.0%")
    [row] = json.loads(CliRunner().invoke(cli, ["stats", "--json"], env=env).output)["issues"]
    assert (row["votes"], row["voters"], row["clickers"], row["rates"]["vote"]) == (3, 2, 3, 0.5)


def add_vote_events(engine, count: int) -> list[int]:
    with session_scope(engine) as session:
        events = [VoteEvent(comparison=SLUG, tool=1, choice="ship", voter=f"v{n}", cast_at=SENT_AT + timedelta(hours=n))
                  for n in range(count)]
        session.add_all(events)
        session.flush()
        return [event.id for event in events]


def test_vote_events_waiting_for_the_site_and_since_when_the_push_fails(engine):
    "five events, the site took the first two, then answered 503 for a day: three wait, failing since then"
    ids = add_vote_events(engine, 5)
    before = site_push_status(engine=engine, webhook_url=SITE)  # no site_push row yet: nothing pushed
    assert (before.waiting, before.oldest_waiting_at, before.failing_since) == (5, SENT_AT, None)
    assert push_line(before) == "site push: 5 vote events waiting (oldest 2026-11-26 09:00 UTC)"
    failing = SENT_AT + timedelta(hours=2)
    with session_scope(engine) as session:
        session.add(SitePush(id=1, pushed_through=ids[1], failures=7, failing_since=failing,
                             last_error="HTTP 503 from verdicts.example.com", expired=1))
    push = site_push_status(engine=engine, webhook_url=SITE)
    assert (push.waiting, push.oldest_waiting_at, push.failing_since, push.expired) == (3, SENT_AT + timedelta(hours=2), failing, 1)
    assert push.as_dict() == {"waiting": 3, "oldest_waiting_at": "2026-11-26T11:00:00+00:00",
                              "failing_since": "2026-11-26T11:00:00+00:00",
                              "last_error": "HTTP 503 from verdicts.example.com", "expired": 1}
    assert push_line(push) == ("site push: 3 vote events waiting (oldest 2026-11-26 11:00 UTC); failing since "
                               "2026-11-26 11:00 UTC: HTTP 503 from verdicts.example.com; 1 expired unsent after "
                               "3 days of retries")
    assert site_push_status(engine=engine, webhook_url=None) is None  # no site webhook: nothing is pushed


def test_the_command_shows_the_push_waiting_and_failing(engine, db_url):
    "with DIGEST_SITE_WEBHOOK_URL set, the table's last line and --json's site_push say three wait and why it fails"
    ids = add_vote_events(engine, 5)
    with session_scope(engine) as session:
        session.add(SitePush(id=1, pushed_through=ids[1], failing_since=SENT_AT + timedelta(hours=2),
                             last_error="HTTP 503 from verdicts.example.com"))
    sent_delivery(engine, sent_at=SENT_AT, week="2026-W48")
    env = {"DIGEST_DATABASE_URL": db_url, "DIGEST_SITE_WEBHOOK_URL": SITE, "DIGEST_SITE_WEBHOOK_SECRET": "s" * 32}
    table = CliRunner().invoke(cli, ["stats"], env=env, terminal_width=250)
    assert table.exit_code == 0, table.output
    assert ("site push: 3 vote events waiting (oldest 2026-11-26 11:00 UTC); failing since 2026-11-26 11:00 UTC: "
            "HTTP 503 from verdicts.example.com") in table.output
    document = json.loads(CliRunner().invoke(cli, ["stats", "--json"], env=env).output)
    assert document["site_push"] == {"waiting": 3, "oldest_waiting_at": "2026-11-26T11:00:00+00:00",
                                     "failing_since": "2026-11-26T11:00:00+00:00",
                                     "last_error": "HTTP 503 from verdicts.example.com", "expired": 0}
    assert [row["week"] for row in document["issues"]] == ["2026-W48"]


def test_a_vote_changed_from_a_later_email_counts_for_that_issue(engine):
    "Ada votes ship from week 47's email, then skip from week 48's: one standing vote, week 48's, and she is its clicker"
    add_comparison(engine, slug=SLUG, published_at=SENT_AT - timedelta(days=8))
    [ada] = add_subscribers(engine, 1)
    open_issue(engine=engine, week="2026-W47", now=SENT_AT - timedelta(days=7))
    add_comparison(engine, published_at=SENT_AT - timedelta(days=1))
    open_issue(engine=engine, week="2026-W48", now=SENT_AT)
    cast(engine, ada, "1", "ship", week="2026-W47", now=SENT_AT - timedelta(days=6))
    assert cast(engine, ada, "1", "skip", week="2026-W48") == "changed"
    week48, week47 = issue_stats(engine=engine)
    assert (week48.week, week48.votes, week48.voters, week48.clickers) == ("2026-W48", 1, 1, 1)
    assert (week47.week, week47.votes, week47.voters, week47.clickers) == ("2026-W47", 0, 0, 0)
