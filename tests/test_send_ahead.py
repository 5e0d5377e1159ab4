"""A sender prepares its next batch while the one before is posted (digest.send.ahead): leased, uncommitted, on
PostgreSQL; read on SQLite. What each POST finds in the database, and what a crash, a pause, another sender or a
slow provider leave behind."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import select, text, update

from digest.claim.opening import open_issue
from digest.config import Settings
from storage.db import make_engine, session_scope
from storage.models import Delivery, Issue
from tests.factories import RecordingTransport, add_comparison, add_subscribers, build_sender

SLOT = datetime(2026, 11, 26, 9, 0, tzinfo=timezone.utc)


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so no handler in the sender catches it."""


def sender_for(url: str, tmp_path, transport, *, batch_size: int = 2, lease_seconds: float = 600.0):
    config = Settings(database_url=url, secret_key="k" * 32, base_url="https://news.example.com",
                      outbox_dir=tmp_path / "outbox", transport="outbox", batch_size=batch_size,
                      lease_seconds=lease_seconds)
    return build_sender(config, transport=transport, sleep=lambda seconds: None)


def opened(sender, readers: int) -> Issue:
    add_comparison(sender.services.engine, published_at=SLOT - timedelta(days=2))
    add_subscribers(sender.services.engine, readers)
    return open_issue(engine=sender.services.engine, week="2026-W48", now=SLOT).issue


def by_status(url: str) -> dict[str, list[int]]:
    engine = make_engine(url)
    with session_scope(engine) as session:
        rows = session.execute(select(Delivery.id, Delivery.status).order_by(Delivery.id)).all()
    engine.dispose()
    grouped: dict[str, list[int]] = {}
    for delivery_id, status in rows:
        grouped.setdefault(status, []).append(delivery_id)
    return grouped


def locked_by_others(url: str) -> set[int]:
    """Pending rows another transaction holds locked (FOR UPDATE SKIP LOCKED skips them), seen from outside."""
    engine = make_engine(url)
    with engine.connect() as connection:
        pending = set(connection.execute(text("SELECT id FROM delivery WHERE status = 'pending'")).scalars())
        free = set(connection.execute(
            text("SELECT id FROM delivery WHERE status = 'pending' FOR UPDATE SKIP LOCKED")).scalars())
        connection.rollback()
    engine.dispose()
    return pending - free


class Watching(RecordingTransport):
    """Records, at each POST, what the database shows another connection: the rows of each status, and on
    PostgreSQL the pending rows someone holds locked (waiting up to a second for them: the lease ahead runs beside
    the POST)."""

    def __init__(self, url: str):
        super().__init__()
        self.url = url
        self.seen: list[tuple[dict[str, list[int]], set[int]]] = []

    def send(self, batch):
        statuses, locked = by_status(self.url), set()
        if self.url.startswith("postgresql"):
            locked, deadline = locked_by_others(self.url), time.monotonic() + 1.0
            while not locked and statuses.get("pending") and time.monotonic() < deadline:
                time.sleep(0.01)
                locked = locked_by_others(self.url)
        self.seen.append((statuses, locked))
        return super().send(batch)


def test_each_batch_goes_out_leased_with_the_one_before_recorded_and_the_next_one_not_leased_yet(db_url, tmp_path):
    "each POST: its batch leased, every batch before recorded, the next pending to all (on PostgreSQL locked by us)"
    watching = Watching(db_url)
    sender = sender_for(db_url, tmp_path, watching)
    report = sender.send_issue(opened(sender, 7))
    assert report.sent == 7 and report.ambiguous == 0 and watching.calls == 4

    ids = sorted(d for ids in by_status(db_url).values() for d in ids)
    batches = [ids[k:k + 2] for k in range(0, 7, 2)]
    for n, (statuses, locked) in enumerate(watching.seen):
        assert statuses.get("sending") == batches[n], "the batch posted, and only it, is leased and committed"
        assert statuses.get("sent", []) == [d for batch in batches[:n] for d in batch], "every batch before: recorded"
        assert statuses.get("pending", []) == [d for batch in batches[n + 1:] for d in batch]
        following = batches[n + 1] if n + 1 < len(batches) and db_url.startswith("postgresql") else []
        assert locked == set(following), "the next batch is leased ahead: locked, its lease not committed"


def test_a_crash_mid_post_leaves_the_batch_prepared_ahead_pending_and_only_the_posted_one_leased(db_url, tmp_path):
    "the process dies during its second POST: batch 1 sent, batch 2 leased (ambiguous), batch 3 untouched"
    class CrashOnSecond(RecordingTransport):
        def send(self, batch):
            if self.calls == 1:
                time.sleep(0.2)  # the lease ahead of batch 3 has run by now
                raise Crash()
            return super().send(batch)

    sender = sender_for(db_url, tmp_path, CrashOnSecond())
    issue = opened(sender, 6)
    with pytest.raises(Crash):
        sender.send_issue(issue)
    statuses = by_status(db_url)
    assert {status: len(ids) for status, ids in statuses.items()} == {"sent": 2, "sending": 2, "pending": 2}
    assert statuses["sent"] < statuses["sending"] < statuses["pending"]
    if db_url.startswith("postgresql"):
        assert locked_by_others(db_url) == set(), "nothing is left locked"

    rerun = RecordingTransport()
    report = sender_for(db_url, tmp_path, rerun).send_issue(issue)
    assert report.sent == 2 and report.remaining == 2, "the pending batch goes; the live lease is respected"


def test_a_pause_while_a_batch_is_out_stops_before_the_batch_prepared_ahead(db_url, tmp_path):
    "paused during the second POST: that batch is recorded, the one leased ahead is given back, none counted"
    class PauseOnSecond(RecordingTransport):
        def __init__(self, url):
            super().__init__()
            self.url = url

        def send(self, batch):
            if self.calls == 1:
                time.sleep(0.2)  # the lease ahead of batch 3 has run by now
                engine = make_engine(self.url)
                with session_scope(engine) as session:
                    session.execute(update(Issue).values(paused_at=SLOT, pause_reason="by hand"))
                engine.dispose()
            return super().send(batch)

    sender = sender_for(db_url, tmp_path, PauseOnSecond(db_url))
    report = sender.send_issue(opened(sender, 8))
    assert report.halted == "paused: by hand"
    assert report.sent == 4 and report.ambiguous == 0 and report.remaining == 4
    assert {status: len(ids) for status, ids in by_status(db_url).items()} == {"sent": 4, "pending": 4}


def test_rows_read_ahead_that_another_sender_leases_meanwhile_are_left_to_it(sqlite_url, tmp_path, monkeypatch):
    "SQLite reads the next batch without a lock: another sender leases one of its rows during the POST; the rest"
    " is claimed afresh and goes out without that row, though it ends where the batch read ahead ended"
    from digest.send import loop

    read = threading.Event()

    def pick_after(**arguments):
        rows = original(**arguments)
        read.set()
        return rows

    original = loop.pick_after
    monkeypatch.setattr(loop, "pick_after", pick_after)

    class OtherSenderMeanwhile(RecordingTransport):
        def send(self, batch):
            if self.calls == 0:
                assert read.wait(5), "the second batch was read ahead"
                engine = make_engine(sqlite_url)
                with session_scope(engine) as session:
                    second = session.execute(select(Delivery.id).where(Delivery.status == "pending")
                                             .order_by(Delivery.id).limit(1)).scalars().all()
                    session.execute(update(Delivery).where(Delivery.id.in_(second)).values(
                        status="sending", lease_owner="other-host:1:x", leased_until=SLOT + timedelta(days=365)))
                engine.dispose()
            return super().send(batch)

    transport = OtherSenderMeanwhile()
    sender = sender_for(sqlite_url, tmp_path, transport)
    report = sender.send_issue(opened(sender, 4))
    assert report.sent == 3 and report.remaining == 1 and report.ambiguous == 0
    statuses = by_status(sqlite_url)
    assert len(statuses["sent"]) == 3 and len(statuses["sending"]) == 1
    posted = {p for batch in transport.batches for p in batch.delivery_ids()}
    assert not posted & set(statuses["sending"]), "what the other sender holds was not posted here"


@pytest.mark.postgres
def test_a_post_slower_than_the_hold_gives_the_lease_ahead_up_and_sends_every_reader_once(
        postgres_url, tmp_path, monkeypatch, caplog):
    "the server ends the idle transaction that leased ahead: that batch is claimed again, no copy twice, none counted"
    monkeypatch.setattr("digest.send.loop.AHEAD_HOLD_SECONDS", 0.2)

    class Slow(RecordingTransport):
        def send(self, batch):
            time.sleep(1.0)
            return super().send(batch)

    slow = Slow()
    sender = sender_for(postgres_url, tmp_path, slow)
    with caplog.at_level(logging.INFO, logger="digest.send"):
        report = sender.send_issue(opened(sender, 6))
    assert report.sent == 6 and report.ambiguous == 0 and report.remaining == 0
    assert sorted(slow.recipients) == sorted(set(slow.recipients)) and len(slow.recipients) == 6
    given_up = [r.getMessage() for r in caplog.records if "given up" in r.getMessage()]
    assert given_up, "the server ended a transaction that leased ahead"
    assert all(message.startswith("the batch prepared ahead is given up (") and "idle-in-transaction timeout" in message
               for message in given_up), "the log says why, in a line"
    assert set(by_status(postgres_url)) == {"sent"}


def test_on_sqlite_every_batch_after_the_first_goes_out_as_read_ahead(sqlite_url, tmp_path, monkeypatch):
    "the sender claims the usual way only for its first batch and to find that nothing is left: the rest was read ahead"
    from digest.send import loop

    claims = []

    def claim_batch(**arguments):
        claims.append(arguments.get("after"))
        return original(**arguments)

    original = loop.claim_batch
    monkeypatch.setattr(loop, "claim_batch", claim_batch)
    transport = RecordingTransport()
    sender = sender_for(sqlite_url, tmp_path, transport)
    report = sender.send_issue(opened(sender, 7))
    assert report.sent == 7 and transport.calls == 4
    assert claims == [None, None], "the first batch, and the look for anything left: every other batch was read ahead"


def test_a_read_ahead_the_database_fails_is_claimed_again_and_the_log_says_so(sqlite_url, tmp_path, monkeypatch, caplog):
    "SQLite: the read of the next batch fails (the database is busy, say): that batch is claimed as usual, once"
    from sqlalchemy.exc import OperationalError

    from digest.send import loop

    def pick_after(**arguments):
        raise OperationalError("SELECT …", {}, Exception("database is locked"))

    monkeypatch.setattr(loop, "pick_after", pick_after)
    transport = RecordingTransport()
    sender = sender_for(sqlite_url, tmp_path, transport)
    with caplog.at_level(logging.INFO, logger="digest.send"):
        report = sender.send_issue(opened(sender, 5))
    assert report.sent == 5 and report.ambiguous == 0 and transport.calls == 3
    assert sorted(transport.recipients) == sorted(set(transport.recipients))
    # After each of the three batches a read was tried: for batches 2 and 3, and for the nothing after the third.
    assert [r.getMessage() for r in caplog.records if "given up" in r.getMessage()] == \
        ["the batch read ahead is given up: claimed again"] * 3
