"""The claim's and the fan-out's rules that the first mutation run of storage/deliveries.py and storage/issues.py
found unheld (issue 22): readers gone between the fan-out and their batch, a batch given back or kept, a dead
sender's rows, the archive's order. Real SQLite and PostgreSQL, a recording transport."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import delete, func, select, update

from digest.claim.opening import open_issue
from digest.config import Settings
from storage.db import make_engine, session_scope
from storage.deliveries import claim_batch, extend_lease, release
from storage.issues import set_ranks
from storage.models import Delivery, Issue, IssueComparison, IssueKind, Subscriber, SubscriberStatus
from tests.factories import RecordingTransport, add_comparison, add_subscribers, build_sender

UTC = timezone.utc
MON = datetime(2026, 11, 23, 0, 0, tzinfo=UTC)
SLOT = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


@pytest.fixture
def transport():
    return RecordingTransport()


@pytest.fixture
def sender(db_url, tmp_path, transport):
    settings = Settings(database_url=db_url, secret_key="k" * 32, base_url="https://news.example.com",
                        outbox_dir=tmp_path / "outbox", transport="outbox", timezone="UTC", batch_size=2)
    sender = build_sender(settings, transport=transport, sleep=lambda s: None)
    yield sender
    sender.services.engine.dispose()


def rows(engine, issue_id: int) -> dict[int, tuple]:
    """subscriber id → (delivery id, status, error, lease owner, lease end) of the issue's rows."""
    with session_scope(engine) as session:
        return {row[0]: tuple(row[1:]) for row in session.execute(
            select(Delivery.subscriber_id, Delivery.id, Delivery.status, Delivery.error, Delivery.lease_owner,
                   Delivery.leased_until).where(Delivery.issue_id == issue_id))}


def sent_to(engine, transport) -> list[int]:
    """The subscriber ids the batches went to."""
    delivered = [r.delivery_id for batch in transport.batches for r in batch.recipients]
    with session_scope(engine) as session:
        owner = dict(session.execute(select(Delivery.id, Delivery.subscriber_id)
                                     .where(Delivery.id.in_(delivered))).all())
    return sorted(owner[d] for d in delivered)


def test_readers_gone_after_the_fan_out_are_not_sent_and_each_row_says_why(sender, transport):
    "after the issue opened one reader unsubscribed, one paused, one was erased (the race's row left): the rest get it"
    engine = sender.services.engine
    add_comparison(engine, published_at=MON)
    add_subscribers(engine, 1, status=SubscriberStatus.unsubscribed)  # no row: readers' and rows' ids differ
    left, erased, kept, paused, other = add_subscribers(engine, 5)
    opened = open_issue(engine=engine, week="2026-W48", now=SLOT)
    before = rows(engine, opened.issue.id)
    # The erased reader's id is another reader's row id: deleting by the wrong column would take that row.
    assert before[kept][0] == erased
    with session_scope(engine) as session:
        session.execute(update(Subscriber).where(Subscriber.id == left)
                        .values(status=SubscriberStatus.unsubscribed.value))
        session.execute(update(Subscriber).where(Subscriber.id == paused).values(paused_until=SLOT + timedelta(days=14)))
        session.execute(delete(Subscriber).where(Subscriber.id == erased))

    report = sender.send_issue(opened.issue)

    assert sent_to(engine, transport) == sorted([kept, other]) and report.remaining == 0
    after = rows(engine, opened.issue.id)
    assert erased not in after  # deleted, as erasing means
    with session_scope(engine) as session:  # a delivery that was not sent has no send time
        stamped = dict(session.execute(select(Delivery.subscriber_id, Delivery.message_id).where(
            Delivery.issue_id == opened.issue.id, Delivery.sent_at.is_not(None))).all())
    # ... and one that was has the provider's id of its request (SendGrid's X-Message-Id, to find it there)
    answered = {f"msg-{n}" for n in range(1, len(transport.batches) + 1)}
    assert sorted(stamped) == sorted([kept, other]) and set(stamped.values()) <= answered
    assert {reader: after[reader][1:3] for reader in (left, paused, kept, other)} == {
        left: ("cancelled", "subscriber no longer active"), paused: ("cancelled", "subscriber paused"),
        kept: ("sent", None), other: ("sent", None)}
    with session_scope(engine) as session:
        assert session.get(Issue, opened.issue.id).completed_at is not None


def claim(engine, issue_id: int, owner: str, *, now: datetime, limit: int = 2, lease: timedelta = timedelta(minutes=5)):
    with session_scope(engine) as session:
        return claim_batch(session=session, issue_id=issue_id, owner=owner, now=now, lease_until=now + lease,
                           limit=limit)


def test_a_batch_given_back_is_pending_again_with_its_reason_and_anyone_may_take_it(sender):
    "the provider is down: the sender gives its batch back; only the lease's owner can, and the next claim takes it"
    engine = sender.services.engine
    add_comparison(engine, published_at=MON)
    add_subscribers(engine, 4)
    issue_id = open_issue(engine=engine, week="2026-W48", now=SLOT).issue.id
    batch = claim(engine, issue_id, "host-a:1:aa", now=SLOT)
    ids = [row[0] for row in batch.rows]
    with session_scope(engine) as session:
        assert release(session=session, ids=ids, owner="host-b:2:bb", error="not mine") == 0
        assert release(session=session, ids=ids, owner="host-a:1:aa", error="HTTP 503 from the provider") == 2
    state = {row[0]: row[1:3] for row in rows(engine, issue_id).values()}
    assert [state[i] for i in ids] == [("pending", "HTTP 503 from the provider")] * 2
    again = claim(engine, issue_id, "host-b:2:bb", now=SLOT + timedelta(seconds=1))
    assert [row[0] for row in again.rows] == ids


def test_a_lease_kept_for_a_retry_runs_to_its_new_end_and_then_another_sender_takes_the_rows(sender):
    "before a retry the sender keeps its batch; once another sender took it over, it is no longer its to post"
    engine = sender.services.engine
    add_comparison(engine, published_at=MON)
    add_subscribers(engine, 4)
    issue_id = open_issue(engine=engine, week="2026-W48", now=SLOT).issue.id
    retried, other = claim(engine, issue_id, "host-a:1:aa", now=SLOT), claim(engine, issue_id, "host-b:2:bb", now=SLOT)
    until = SLOT + timedelta(hours=1)
    with session_scope(engine) as session:
        assert extend_lease(session=session, ids=[row[0] for row in retried.rows], owner="host-a:1:aa",
                            lease_until=until, ambiguous=True) == 2
    leases = {row[0]: row[4] for row in rows(engine, issue_id).values()}
    assert [leases[row[0]] for row in retried.rows] == [until] * 2
    assert [leases[row[0]] for row in other.rows] == [SLOT + timedelta(minutes=5)] * 2
    # Ten minutes on, a third sender takes over the batch whose lease ran out, and only that one.
    taken = claim(engine, issue_id, "host-c:3:cc", now=SLOT + timedelta(minutes=10), limit=4)
    assert [row[0] for row in taken.rows] == [row[0] for row in other.rows]
    # Past the kept lease's end, the retried batch is taken over too, and its first sender may not post it.
    late = claim(engine, issue_id, "host-c:3:cc", now=until + timedelta(minutes=1), limit=4)
    assert {row[0] for row in retried.rows} <= {row[0] for row in late.rows}
    with session_scope(engine) as session:
        assert extend_lease(session=session, ids=[row[0] for row in retried.rows], owner="host-a:1:aa",
                            lease_until=until, ambiguous=False) == 0


def test_rows_leased_by_a_sender_that_died_on_this_host_are_sent_at_once_not_after_its_lease(sender, transport):
    "a worker killed mid-batch: the next send on the same host takes its rows over without waiting an hour"
    engine = sender.services.engine
    add_comparison(engine, published_at=MON)
    readers = add_subscribers(engine, 2)
    opened = open_issue(engine=engine, week="2026-W48", now=SLOT)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead = f"{socket.gethostname()}:{gone.pid}:0badc0de"  # host:pid:random, as digest.send.owners names it
    claim(engine, opened.issue.id, dead, now=datetime.now(UTC), lease=timedelta(hours=1))
    sender.send_issue(opened.issue)
    assert sent_to(engine, transport) == sorted(readers)


# -- the archive ------------------------------------------------------------------------------------------------

def test_the_archive_lists_weekly_issues_only_each_with_its_comparisons_in_rank_order(web):
    "an editor's ranking, not the claim's order, is the order on the index and on the issue's page"
    engine = web.app.state.ctx.engine
    titles = ["Alpha vs Beta", "Gamma vs Delta", "Epsilon vs Zeta"]
    ids = [add_comparison(engine, title=title, published_at=datetime(2026, 3, 2, 9, tzinfo=UTC), pcts=(100, 25))
           for title in titles]
    add_subscribers(engine, 1)
    issue = open_issue(engine=engine, week="2026-W10", now=datetime(2026, 3, 5, 9, tzinfo=UTC)).issue
    with session_scope(engine) as session:
        set_ranks(session=session, issue_id=issue.id, ranked_ids=[ids[2], ids[0], ids[1]])
        session.add(Issue(week="2026-M03", kind=IssueKind.monthly.value, created_at=datetime(2026, 3, 6, tzinfo=UTC),
                          fanned_out_at=datetime(2026, 3, 6, tzinfo=UTC)))
        claimed = dict(session.execute(select(IssueComparison.comparison_id, IssueComparison.rank)).all())
    assert sorted(claimed, key=claimed.get) == [ids[2], ids[0], ids[1]]
    ranked = ["Epsilon vs Zeta", "Alpha vs Beta", "Gamma vs Delta"]
    TITLE = r"(?:Alpha|Gamma|Epsilon) vs \w+"

    index = web.get("/archive").text
    assert re.findall(r'href="/archive/([^"]+)"', index) == ["2026-W10"]  # a monthly email repeats, it is no entry
    assert re.findall(TITLE, index) == ranked
    page = web.get("/archive/2026-W10").text
    assert list(dict.fromkeys(re.findall(TITLE, page))) == ranked


# -- verdict changes carried into the week's segments -----------------------------------------------------------

def test_readers_of_changes_get_a_segment_of_their_own_with_their_audience_line_and_no_segment_is_empty(
        sender, transport):
    "one reader got the changed comparison (and paused since, the pause over), one did not: two segments, one reader "
    "each, both saying why they get it"
    from digest.importing.comparisons import store_comparison
    from storage.models import Segment
    from tests.test_verdict_changes import W47, WEEK, item, send_week

    engine = sender.services.engine
    store_comparison(engine=engine, item=item("a", ("A1", "ssss"), ("A2", "ssss")), now=W47)
    first, = add_subscribers(engine, 1)
    send_week(sender, "2026-W47", W47)
    second, = add_subscribers(engine, 1)
    store_comparison(engine=engine, item=item("a", ("A1", "kkkk"), ("A2", "ssss")), now=W47 + timedelta(days=1))
    store_comparison(engine=engine, item=item("n", ("N1", "ssss"), ("N2", "kkkk"), published_at=W47 + WEEK),
                     now=W47 + WEEK)
    with session_scope(engine) as session:  # the first reader paused after W47; the pause is over by W48
        session.execute(update(Subscriber).where(Subscriber.id == first).values(paused_until=W47 + timedelta(days=2)))
    transport.batches.clear()
    opened = send_week(sender, "2026-W48", W47 + WEEK)

    with session_scope(engine) as session:
        segments = session.execute(select(Segment.audience, Segment.change_ids, Segment.size)
                                   .where(Segment.issue_id == opened.issue.id)).all()
    assert sorted((audience, bool(changes), size) for audience, changes, size in segments) == [
        ("all categories", False, 1), ("all categories", True, 1)]
    assert len(transport.batches) == 2
    for batch in transport.batches:
        assert "You get this because you subscribed to Weekly AI Tool Verdicts for:\n  all categories" in batch.text


def test_a_send_report_counts_the_segments_of_its_own_issue(sender):
    "`digest send` prints 'issue W: N segments': week 48 has one, week 49 two (two audiences), whatever came before"
    engine = sender.services.engine
    add_comparison(engine, published_at=MON)
    add_subscribers(engine, 1)
    first = sender.send_issue(open_issue(engine=engine, week="2026-W48", now=SLOT).issue)
    add_comparison(engine, published_at=MON + timedelta(days=7), category="Developer Tools")
    add_comparison(engine, published_at=MON + timedelta(days=7), category="Writing")
    add_subscribers(engine, 1, categories=("Writing",))
    opened = open_issue(engine=engine, week="2026-W49", now=SLOT + timedelta(days=7))
    assert opened.deliveries == 2  # each segment's readers counted (a send that follows its opening takes the count)
    second = sender.send_issue(opened.issue)
    with session_scope(engine) as session:
        from storage.models import Segment

        sizes = dict(session.execute(select(Segment.issue_id, func.count()).group_by(Segment.issue_id)).all())
    assert sorted(sizes.values()) == [1, 2] and (first.segments, second.segments) == (1, 2)


@pytest.mark.postgres
@pytest.mark.parametrize("after", [None, (0, 0)], ids=["from the start", "after a position"])
def test_two_senders_claiming_at_once_lease_different_rows_on_postgresql(postgres_url, after):
    "sender A's claim is not committed yet: B, claiming the same way, skips A's rows at once (FOR UPDATE SKIP "
    "LOCKED) instead of reading them as pending, waiting for A's lock and leasing them a second time"
    engine = make_engine(postgres_url)
    add_comparison(engine, published_at=MON)
    add_subscribers(engine, 6)
    issue_id = open_issue(engine=engine, week="2026-W48", now=SLOT).issue.id
    lease = SLOT + timedelta(minutes=5)
    claimed: dict[str, list[int]] = {}

    def claim(session, owner: str) -> None:
        batch = claim_batch(session=session, issue_id=issue_id, owner=owner, now=SLOT, lease_until=lease, limit=3,
                            after=after)  # (0, 0): past segment 0, the claim of later segments
        claimed[owner] = [row[0] for row in batch.rows]

    def other_sender() -> None:
        with session_scope(engine) as session:
            claim(session, "b-host:2")

    try:
        with session_scope(engine) as session:
            claim(session, "a-host:1")
            b = threading.Thread(target=other_sender)
            b.start()
            b.join(10)
            waited = b.is_alive()
        b.join(30)
        assert not waited, "B waited for A's uncommitted lease"
        assert len(claimed["a-host:1"]) == len(claimed["b-host:2"]) == 3
        assert set(claimed["a-host:1"]).isdisjoint(claimed["b-host:2"])
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_an_issue_opened_while_an_import_holds_a_comparison_carries_the_version_the_import_commits(postgres_url):
    "an import has locked a published comparison and raised its version, not yet committed, when the issue opens: "
    "the claim reads the old version, waits for the lock to mark the row claimed, then reads the version again, so "
    "the issue carries the one its email shows (and a later change keeps that one for it, storage.comparisons)"
    from sqlalchemy import text

    engine = make_engine(postgres_url)
    comparison = add_comparison(engine, published_at=MON)
    add_subscribers(engine, 1)
    opened = {}

    def open_it() -> None:
        opened["issue"] = open_issue(engine=engine, week="2026-W48", now=SLOT).issue

    try:
        with engine.connect() as importing:
            transaction = importing.begin()
            importing.execute(text("SELECT id FROM comparison WHERE id = :id FOR UPDATE"), {"id": comparison})
            importing.execute(text("UPDATE comparison SET version = version + 1 WHERE id = :id"), {"id": comparison})
            opening = threading.Thread(target=open_it)
            opening.start()
            opening.join(3)
            assert opening.is_alive(), "the opening did not wait for the import's lock"
            transaction.commit()
        opening.join(30)
        with session_scope(engine) as session:
            carried = session.execute(select(IssueComparison.version)
                                      .where(IssueComparison.issue_id == opened["issue"].id)).scalar_one()
        assert carried == 2
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_issues_left_to_send_and_paused_issues_are_listed_oldest_first_on_postgresql(postgres_url):
    "a worker resumes the oldest issue first, and names paused ones in the order they opened, whatever order "
    "PostgreSQL keeps the rows in (an update writes a row's new version after the others)"
    from storage.issues import paused_issues, unfinished_issues

    engine = make_engine(postgres_url)
    add_subscribers(engine, 1)
    ids = []
    for week, now in (("2026-W48", SLOT), ("2026-W49", SLOT + timedelta(days=7))):
        add_comparison(engine, published_at=now - timedelta(days=2))
        ids.append(open_issue(engine=engine, week=week, now=now).issue.id)
    try:
        with session_scope(engine) as session:
            session.execute(update(Issue).where(Issue.id == ids[0]).values(week=Issue.week))  # W48's row now last
            assert [issue.id for issue in unfinished_issues(session=session)] == ids
            session.execute(update(Issue).values(paused_at=SLOT + timedelta(days=8)))
            assert [issue.id for issue in paused_issues(session=session)] == ids
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_due_times_are_stored_in_utc_whatever_time_zone_the_postgresql_server_runs_in(postgres_url):
    "local delivery on a server whose sessions run in New York time: each reader's due time is stored as the UTC "
    "instant it is (a due time bound without its column type would be read as New York wall time, 5 hours off)"
    from digest.claim.local_time import DueTimes
    from storage.issues import FanOutTarget, add_segment, create_issue, fan_out_segments

    engine = make_engine(postgres_url, connect_args={"options": "-c timezone=America/New_York"})
    tokyo, = add_subscribers(engine, 1)
    elsewhere, = add_subscribers(engine, 1)
    due = DueTimes(default=SLOT, by_zone={"Asia/Tokyo": SLOT - timedelta(hours=9)})
    try:
        with session_scope(engine) as session:
            session.execute(update(Subscriber).where(Subscriber.id == tokyo).values(timezone="Asia/Tokyo"))
            issue = create_issue(session=session, week="2026-W48", now=MON)
            segment = add_segment(session=session, issue_id=issue.id, key="k", audience="", comparison_ids=[])
            fan_out_segments(session=session, issue_id=issue.id, targets=[FanOutTarget([""], segment.id)], now=MON,
                             origins=(), engaged_first=False, due=due)
        with session_scope(engine) as session:
            stored = dict(session.execute(select(Delivery.subscriber_id, Delivery.due_at)).all())
        assert stored == {tokyo: SLOT - timedelta(hours=9), elsewhere: SLOT}
    finally:
        engine.dispose()


def test_the_plan_counts_the_readers_the_fan_out_sends_to_and_no_one_else(sender):
    "readers paused, unsubscribed or monthly get no segment of the weekly issue; one whose pause ends at the very "
    "minute it opens is a reader of it: every segment planned is filled, and each reader sent to has one"
    from storage.models import Segment

    engine = sender.services.engine
    for category in ("Writing", "Security", "Design", "Audio", "Data"):
        add_comparison(engine, published_at=MON, category=category)
    writer, = add_subscribers(engine, 1, categories=("Writing",))
    paused, = add_subscribers(engine, 1, categories=("Security",))
    add_subscribers(engine, 1, categories=("Design",), status=SubscriberStatus.unsubscribed)
    monthly, = add_subscribers(engine, 1, categories=("Data",))
    back, = add_subscribers(engine, 1, categories=("Audio",))
    with session_scope(engine) as session:
        session.execute(update(Subscriber).where(Subscriber.id == paused).values(paused_until=SLOT + timedelta(days=3)))
        session.execute(update(Subscriber).where(Subscriber.id == back).values(paused_until=SLOT))
        session.execute(update(Subscriber).where(Subscriber.id == monthly).values(cadence="monthly"))
    opened = open_issue(engine=engine, week="2026-W48", now=SLOT)
    with session_scope(engine) as session:
        segments = sorted(session.execute(select(Segment.audience, Segment.size)
                                          .where(Segment.issue_id == opened.issue.id)).all())
        readers = set(session.execute(select(Delivery.subscriber_id)).scalars())
    assert segments == [("Audio", 1), ("Writing", 1)]
    assert readers == {writer, back} and opened.deliveries == 2


def test_each_segments_rows_are_neighbours_in_the_table_whatever_order_its_readers_signed_up_in(sender):
    "readers of two segments signed up alternately: each segment's deliveries still get consecutive ids, so a "
    "batch's lease and record touch a few pages of the table, not one page per reader"
    from storage.models import Segment

    engine = sender.services.engine
    for category in ("Writing", "Security"):
        add_comparison(engine, published_at=MON, category=category)
    for _ in range(4):
        add_subscribers(engine, 1, categories=("Writing",))
        add_subscribers(engine, 1, categories=("Security",))
    opened = open_issue(engine=engine, week="2026-W48", now=SLOT)
    with session_scope(engine) as session:
        spans = session.execute(select(Segment.audience, func.min(Delivery.id), func.max(Delivery.id), func.count())
                                .join(Segment, Segment.id == Delivery.segment_id)
                                .where(Delivery.issue_id == opened.issue.id).group_by(Segment.audience)).all()
    assert sorted(audience for audience, *_ in spans) == ["Security", "Writing"]
    assert all(last - first + 1 == count == 4 for _, first, last, count in spans)


def test_ranking_one_issue_leaves_the_comparisons_of_another_as_they_were(sender):
    "set_ranks numbers the issue's own comparisons: an id of another issue's comparison among them changes nothing"
    engine = sender.services.engine
    add_subscribers(engine, 1)
    first = [add_comparison(engine, published_at=MON) for _ in range(2)]
    w48 = open_issue(engine=engine, week="2026-W48", now=SLOT).issue
    second = [add_comparison(engine, published_at=MON + timedelta(days=7)) for _ in range(2)]
    w49 = open_issue(engine=engine, week="2026-W49", now=SLOT + timedelta(days=7)).issue
    with session_scope(engine) as session:
        before = dict(session.execute(select(IssueComparison.comparison_id, IssueComparison.rank)).all())
        set_ranks(session=session, issue_id=w49.id, ranked_ids=[first[1], second[1], first[0], second[0]])
        after = dict(session.execute(select(IssueComparison.comparison_id, IssueComparison.rank)).all())
    assert {c: after[c] for c in first} == {c: before[c] for c in first}  # W48's, as W48 ranked them
    assert (after[second[1]], after[second[0]]) == (1, 3) and w48.id != w49.id
