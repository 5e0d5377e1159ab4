"""The pixel's writer process (digest.track.open_writer): what an answered fetch can count on, on SQLite and
PostgreSQL, with a real `digest serve` or the app in a test client, and the real child process.

A fetch is answered when its open is handed to the writer; each test holds the database's write lock
so that nothing can be committed before the moment it means to check.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import astuple
from datetime import datetime, timedelta, timezone
from pathlib import Path

import anyio.from_thread
import httpx
from fastapi.testclient import TestClient
from sqlalchemy import func, insert, select, text

import digest.track.open_writer as open_writer
from digest.links import RecipientRef, Signer
from digest.track.open_writer import OpenWriter
from digest.web import create_app
from storage.db import make_engine, session_scope
from storage.models import Delivery, DeliveryStatus, Event, Issue, Segment, Subscriber, SubscriberStatus
from tests.factories import RecordingTransport, link_tags, recipient_token
from tests.fixtures_web import web_settings
from tests.test_tracking_load import REPO, SECRET, _free_port, _serve
from tests.test_web_tracking import GIF_HEADER, HUMAN_UA, an_hour_ago, assert_pixel, sent_delivery, settle_opens


@contextlib.contextmanager
def write_lock(url: str) -> Iterator[None]:
    """Hold the database's write lock on the event table until the block ends (then roll back)."""
    if url.startswith("sqlite"):
        connection = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None, check_same_thread=False)
        connection.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            connection.execute("ROLLBACK")
            connection.close()
    else:
        engine = make_engine(url)
        with engine.connect() as connection:
            transaction = connection.begin()
            connection.execute(text("LOCK TABLE event IN EXCLUSIVE MODE"))
            try:
                yield
            finally:
                transaction.rollback()
        engine.dispose()


def opens_stored(engine) -> int:
    """Read without taking the write lock (a plain BEGIN on SQLite), so it works while a test holds it."""
    with engine.execution_options(read_only=True).connect() as connection:
        return connection.execute(select(func.count()).select_from(Event).where(Event.kind == "open")).scalar_one()


def wait_for(condition, *, seconds: float = 30.0, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds:.0f} s: {what}"
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def exited(pid: int) -> bool:
    """Gone, or a zombie waiting for whoever adopted it to reap it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def sent_deliveries(engine, *, count: int) -> list[RecipientRef]:
    """One issue sent two hours ago to ``count`` new subscribers, in bulk (a load needs tens of thousands)."""
    now = datetime.now(timezone.utc)
    sent_at = now - timedelta(hours=2)
    with session_scope(engine) as session:
        issue = Issue(week="2026-W48", created_at=sent_at)
        session.add(issue)
        session.flush()
        segment = Segment(issue_id=issue.id, key="k", comparison_ids="")
        session.add(segment)
        session.flush()
        issue_id, segment_id = issue.id, segment.id
    with engine.begin() as connection:
        connection.execute(insert(Subscriber), [
            {"email": f"reader{n}@example.com", "email_key": f"reader{n}@example.com", "name": "",
             "status": SubscriberStatus.active, "categories": "", "created_at": now, "updated_at": now}
            for n in range(count)])
        subscribers = connection.execute(select(Subscriber.id)).scalars().all()
        connection.execute(insert(Delivery), [
            {"issue_id": issue_id, "subscriber_id": subscriber_id, "segment_id": segment_id,
             "status": DeliveryStatus.sent, "attempts": 1, "ambiguous_resends": 0, "created_at": sent_at,
             "sent_at": sent_at, "message_id": "m"} for subscriber_id in subscribers])
        rows = connection.execute(select(Delivery.subscriber_id, Delivery.id, Subscriber.link_tag)
                                  .join(Subscriber, Subscriber.id == Delivery.subscriber_id)).all()
    return [RecipientRef(subscriber_id, delivery_id, tag) for subscriber_id, delivery_id, tag in rows]


def test_answered_opens_survive_the_web_process_being_killed(db_url, tmp_path):
    "20 fetches answered while the store is locked, then `digest serve` is SIGKILLed: the writer still commits all 20"
    engine = make_engine(db_url)
    signer = Signer(SECRET)
    tokens = [recipient_token(engine, signer, d.subscriber_id, d.id)
              for d in (sent_delivery(engine, sent_at=an_hour_ago()) for _ in range(20))]
    port = _free_port()
    server = _serve(db_url, port, tmp_path / "serve.log")
    try:
        with write_lock(db_url):
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers={"User-Agent": HUMAN_UA}) as client:
                for token in tokens:
                    response = client.get(f"/o/{token}.gif")
                    assert response.status_code == 200 and response.content.startswith(GIF_HEADER)
            writer, = children(server.pid)
            assert opens_stored(engine) == 0  # nothing could be committed yet: the answers came first
            server.send_signal(signal.SIGKILL)
            server.wait(timeout=10)
        wait_for(lambda: opens_stored(engine) == 20, what="the orphaned writer commits the 20 opens")
        wait_for(lambda: exited(writer), seconds=10, what="the writer exits once its input ends")
    finally:
        if server.poll() is None:
            server.kill()
    engine.dispose()


# A web process in miniature: hands the opens of the deliveries named on stdin to a writer, says its pid, dies.
_DYING_PARENT = """
import asyncio, json, os, signal, sys
from datetime import datetime, timedelta, timezone
from digest.links import RecipientRef
from digest.track.open_writer import OpenWriter

async def main():
    writer = OpenWriter(database_url=sys.argv[1], window_seconds=10)
    for fields in json.load(sys.stdin):
        await writer.record(RecipientRef(*fields), "Thunderbird", datetime.now(timezone.utc))
    print(writer.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)

asyncio.run(main())
"""


def test_a_writer_whose_web_process_died_commits_its_whole_input(db_url, tmp_path):
    "2,500 opens handed over, store locked, the web process SIGKILLed: the writer commits all 2,500 with nobody to confirm to"
    engine = make_engine(db_url)
    recipients = sent_deliveries(engine, count=2_500)  # MAX_BATCH 1000: three transactions, all after the death
    errors = tmp_path / "stderr"  # a file: the writer inherits it, and a pipe would be read until the writer exits
    with write_lock(db_url), errors.open("w") as stderr:
        parent = subprocess.run([sys.executable, "-c", _DYING_PARENT, db_url], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=stderr, text=True, input=json.dumps([astuple(r) for r in recipients]),
                                timeout=60)
        assert parent.returncode == -signal.SIGKILL, errors.read_text()
        writer = int(parent.stdout)
        assert opens_stored(engine) == 0
    wait_for(lambda: exited(writer), seconds=60, what="the writer commits its input and exits")
    assert opens_stored(engine) == 2_500
    engine.dispose()


def test_a_clean_shutdown_waits_until_every_answered_open_is_committed(db_url):
    "10 fetches answered while the store is locked; the lock goes 0.5 s later; leaving the app waits for all 10"
    engine = make_engine(db_url)
    app = create_app(web_settings(db_url), engine=engine, transport=RecordingTransport())
    tokens = [recipient_token(engine, app.state.ctx.signer, delivery.subscriber_id, delivery.id)
              for delivery in (sent_delivery(engine, sent_at=an_hour_ago()) for _ in range(10))]
    lock = write_lock(db_url)
    with TestClient(app) as client:
        lock.__enter__()  # after reading the tokens' tags: a read on SQLite begins IMMEDIATE (storage.db)
        for token in tokens:
            assert_pixel(client.get(f"/o/{token}.gif", headers={"User-Agent": HUMAN_UA}))
        assert opens_stored(engine) == 0
        pid = app.state.ctx.open_writer().pid
        threading.Timer(0.5, lock.__exit__, (None, None, None)).start()  # while the app shuts down
    assert opens_stored(engine) == 10
    assert exited(pid)
    engine.dispose()


def test_a_writer_that_dies_is_logged_and_replaced(web, monkeypatch, caplog):
    "the writer is SIGKILLed: the app logs it; an open while it is down is counted and logged; then a new one records"
    ctx = web.app.state.ctx
    first, during, after = (sent_delivery(ctx.engine, sent_at=an_hour_ago()) for _ in range(3))

    def fetch(delivery) -> None:
        token = recipient_token(ctx.engine, ctx.signer, delivery.subscriber_id, delivery.id)
        assert_pixel(web.get(f"/o/{token}.gif", headers={"User-Agent": HUMAN_UA}))

    fetch(first)
    settle_opens(web)
    writer = ctx.open_writer()
    pid = writer.pid
    with caplog.at_level("ERROR", logger="digest.web"):
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: writer.pid is None, seconds=10, what="the app notices the writer is gone")
        monkeypatch.setattr(open_writer, "RESTART_AFTER", 3600.0)
        fetch(during)  # still answered; not recorded
        monkeypatch.setattr(open_writer, "RESTART_AFTER", 0.0)
        fetch(after)
        settle_opens(web)
    assert writer.pid not in (None, pid)
    messages = [record.getMessage() for record in caplog.records]
    assert any("open writer: exited (code -9)" in message for message in messages), messages
    assert any("1 opens not recorded while the open writer was down" in message for message in messages), messages
    with session_scope(ctx.engine) as session:
        recorded = set(session.scalars(select(Event.delivery_id).where(Event.kind == "open")))
    assert recorded == {first.id, after.id}


def test_a_stalled_database_holds_back_fetches_beyond_the_unconfirmed_limit(db_url):
    "limit 3, store locked: 3 of 5 opens are handed over at once, 2 wait; the lock goes and all 5 are committed"
    engine = make_engine(db_url)
    deliveries = [sent_delivery(engine, sent_at=an_hour_ago()) for _ in range(5)]
    tags = link_tags(engine, [d.subscriber_id for d in deliveries])
    writer = OpenWriter(database_url=db_url, window_seconds=10, max_unconfirmed=3)
    lock = write_lock(db_url)

    async def scenario() -> None:
        lock.__enter__()
        try:
            now = datetime.now(timezone.utc)
            fetches = [asyncio.ensure_future(writer.record(RecipientRef(d.subscriber_id, d.id, tags[d.subscriber_id]), HUMAN_UA, now))
                       for d in deliveries]
            await asyncio.sleep(1.0)
            assert [fetch.done() for fetch in fetches] == [True, True, True, False, False]
            assert opens_stored(engine) == 0
        finally:
            lock.__exit__(None, None, None)
        await asyncio.wait_for(asyncio.gather(*fetches), 30)
        await writer.settled()
        assert opens_stored(engine) == 5
        await writer.close()

    # On a loop in a thread of its own: the session's Playwright keeps a loop running in this thread.
    with anyio.from_thread.start_blocking_portal() as portal:
        portal.call(scenario)
    engine.dispose()


def test_a_full_pipe_holds_fetches_back_until_their_open_is_in_it(db_url):
    "store locked, 6,000 opens with 512-character agents: ~1 MiB of pipe fills, the rest wait; the lock goes: all 6,000 stored"
    engine = make_engine(db_url)
    recipients = sent_deliveries(engine, count=6_000)
    writer = OpenWriter(database_url=db_url, window_seconds=10)  # 10,000 unconfirmed allowed: only the pipe holds
    lock = write_lock(db_url)

    async def scenario() -> None:
        lock.__enter__()
        try:
            now, agent = datetime.now(timezone.utc), "Thunderbird " * 60
            fetches = [asyncio.ensure_future(writer.record(recipient, agent, now)) for recipient in recipients]
            await asyncio.sleep(2.0)  # the writer starts, reads its first transaction's worth, and waits for the lock
            answered = sum(fetch.done() for fetch in fetches)
            assert 1_000 < answered < 6_000, answered  # ~1 MiB / ~600 bytes per open in the pipe, + 1,000 read
            assert opens_stored(engine) == 0
        finally:
            lock.__exit__(None, None, None)
        await asyncio.wait_for(asyncio.gather(*fetches), 60)
        await writer.settled()
        await writer.close()

    with anyio.from_thread.start_blocking_portal() as portal:
        portal.call(scenario)
    assert opens_stored(engine) == 6_000
    engine.dispose()


def test_a_broken_store_is_logged_at_once_then_summed_not_once_per_transaction(db_url, caplog):
    "the event table is gone: the first refused open is logged at once; four more are one line at shutdown"
    engine = make_engine(db_url)
    app = create_app(web_settings(db_url), engine=engine, transport=RecordingTransport())
    deliveries = [sent_delivery(engine, sent_at=an_hour_ago()) for _ in range(5)]
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE event"))
    with caplog.at_level("ERROR", logger="digest.web"), TestClient(app) as client:
        for delivery in deliveries:
            token = recipient_token(engine, app.state.ctx.signer, delivery.subscriber_id, delivery.id)
            assert_pixel(client.get(f"/o/{token}.gif", headers={"User-Agent": HUMAN_UA}))
            settle_opens(client)  # one transaction each
    refused = [record.getMessage() for record in caplog.records if "could not record" in record.getMessage()]
    assert [message.split(": ")[1] for message in refused] == [
        "could not record 1 opens", "could not record 4 opens"], refused
    assert all("event" in message for message in refused)
    engine.dispose()


def test_opens_of_a_client_that_runs_each_request_on_a_new_loop_are_all_recorded(db_url):
    "a test client outside `with` runs each request on a loop of its own: each loop's writer still commits its open"
    engine = make_engine(db_url)
    app = create_app(web_settings(db_url), engine=engine, transport=RecordingTransport())
    client = TestClient(app)
    for delivery in [sent_delivery(engine, sent_at=an_hour_ago()) for _ in range(3)]:
        token = recipient_token(engine, app.state.ctx.signer, delivery.subscriber_id, delivery.id)
        assert_pixel(client.get(f"/o/{token}.gif", headers={"User-Agent": HUMAN_UA}))
    wait_for(lambda: opens_stored(engine) == 3, seconds=30, what="every loop's open committed")
    engine.dispose()
