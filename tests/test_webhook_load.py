"""Issue 21, item 2: nothing applied twice, nothing lost, on SQLite and PostgreSQL — posts replayed at once from two
clients, a store that cannot keep up (503 with Retry-After, quickly), and a web process killed mid-post."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select, text

from digest.web import create_app
from storage.db import make_engine, session_scope
from storage.models import Event, Issue, Subscriber
from tests.factories import RecordingTransport
from tests.fixtures_web import web_settings
from tests.test_tracking_load import _free_port, _serve
from tests.test_web_tracking import sent_delivery
from tests.test_webhook import PUBLIC_KEY, ago, sg_event, signed


def mixed_posts(engine, *, posts: int, per_post: int, prefix: str) -> tuple[list[str], list]:
    """``posts`` bodies of ``per_post`` events over 30 readers of one issue: delivered, opens, clicks, and a
    bounce, a spam report and an unsubscribe each for a few of them."""
    readers = [sent_delivery(engine, sent_at=ago(1), week="2026-W48") for _ in range(30)]
    kinds = ["delivered", "open", "click", "processed", "delivered", "open"]
    items = []
    for n in range(posts * per_post):
        reader = readers[n % len(readers)]
        kind = kinds[n % len(kinds)]
        extra = {}
        if n % 97 == 5:
            kind, extra = "bounce", {"type": "bounce", "reason": "550 no such user"}
        elif n % 89 == 7:
            kind = "spamreport"
        elif n % 83 == 9:
            kind = "unsubscribe"
        items.append(sg_event(reader, kind, f"{prefix}-{n}", **extra))
    return [json.dumps(items[i:i + per_post]) for i in range(0, len(items), per_post)], items


def expected_totals(items: list[dict]) -> tuple[int, int, int, int]:
    kinds = [item["event"] for item in items]
    return kinds.count("delivered"), kinds.count("bounce"), 0, kinds.count("spamreport")


def totals(engine) -> tuple[int, int, int, int]:
    with session_scope(engine) as session:
        issue = session.scalar(select(Issue).where(Issue.week == "2026-W48"))
        return (issue.reported_delivered, issue.reported_bounced, issue.reported_dropped, issue.reported_complaints)


def provider_events(engine) -> tuple[int, int]:
    with session_scope(engine) as session:
        return session.execute(select(func.count(), func.count(func.distinct(Event.provider_event_id)))
                               .where(Event.provider_event_id.is_not(None))).one()


@pytest.fixture
def hook(db_url):
    """The app with the public key configured."""
    engine = make_engine(db_url)
    app = create_app(web_settings(db_url, sendgrid_webhook_public_key=PUBLIC_KEY, webhook_busy_seconds=5.0),
                     engine=engine, transport=RecordingTransport())
    with TestClient(app, base_url="http://testserver") as client:
        yield client
    engine.dispose()


def test_the_same_posts_replayed_at_once_by_two_clients_record_and_count_each_event_once(hook):
    "two clients post the same 12 posts at once (one in order, one backwards, as SendGrid's retries may): each event once, the totals once"
    engine = hook.app.state.ctx.engine
    bodies, items = mixed_posts(engine, posts=12, per_post=60, prefix="twice")

    def client(order: list[str]) -> list[dict]:
        answers = []
        for body in order:
            response = hook.post("/webhooks/sendgrid", content=body, headers=signed(body))
            assert response.status_code == 200, response.text
            answers.append(response.json())
        return answers

    with ThreadPoolExecutor(2) as pool:
        forwards, backwards = pool.submit(client, bodies), pool.submit(client, bodies[::-1])
        answers = forwards.result() + backwards.result()
    assert sum(a["applied"] for a in answers) == len(items)
    assert sum(a["duplicates"] for a in answers) == len(items)
    assert provider_events(engine) == (len(items), len(items))
    assert totals(engine) == expected_totals(items)
    spam = {item["email"] for item in items if item["event"] == "spamreport"}
    with session_scope(engine) as session:
        statuses = dict(session.execute(select(Subscriber.email_key, Subscriber.status)).all())
    assert all(statuses[email] == "complained" for email in spam)


def test_two_processes_applying_the_same_events_at_once_apply_each_once(db_url):
    "the store's half alone, two engines (two web processes), eight rounds of the same post at once: no error, no deadlock, each event and total once"
    from digest.track.events import apply_provider_events
    from digest.transports.sendgrid_events import read_events

    engines = [make_engine(db_url), make_engine(db_url)]
    _, items = mixed_posts(engines[0], posts=8, per_post=100, prefix="procs")
    now = ago(0)
    rounds = [items[i:i + 100] for i in range(0, len(items), 100)]
    barrier = threading.Barrier(2)

    def process(engine) -> int:
        applied = 0
        for post in rounds:
            barrier.wait(timeout=60)
            applied += apply_provider_events(engine=engine, events=read_events(post, now=now), now=now).applied
        return applied

    with ThreadPoolExecutor(2) as pool:
        applied = [pool.submit(process, engine) for engine in engines]
        assert sum(f.result() for f in applied) == len(items)
    assert provider_events(engines[0]) == (len(items), len(items))
    assert totals(engines[0]) == expected_totals(items)
    for engine in engines:
        engine.dispose()


@pytest.fixture
def quick_hook(db_url):
    """The app with the key, and half a second for a post to reach the store."""
    engine = make_engine(db_url)
    app = create_app(web_settings(db_url, sendgrid_webhook_public_key=PUBLIC_KEY, webhook_busy_seconds=0.5),
                     engine=engine, transport=RecordingTransport())
    with TestClient(app, base_url="http://testserver") as client:
        yield client
    engine.dispose()


def hold_the_store(db_url: str):
    """Another process's transaction holding what a webhook post must write; release() ends it."""
    if db_url.startswith("sqlite"):
        connection = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        connection.execute("BEGIN IMMEDIATE")  # SQLite's write lock
        return connection.rollback
    engine = create_engine(db_url)
    connection = engine.connect()
    connection.execute(text("LOCK TABLE event IN SHARE ROW EXCLUSIVE MODE"))  # no INSERT until it ends

    def release() -> None:
        connection.rollback()
        connection.close()
        engine.dispose()
    return release


def test_a_post_the_store_cannot_take_in_time_is_a_quick_503_and_its_retry_applies_it_once(quick_hook, db_url):
    "another process holds the store: 503 with Retry-After within the bound, no 2xx; released, SendGrid's retry finds every event once"
    engine = quick_hook.app.state.ctx.engine
    bodies, items = mixed_posts(engine, posts=1, per_post=40, prefix="busy")
    release = hold_the_store(db_url)
    try:
        started = time.monotonic()
        response = quick_hook.post("/webhooks/sendgrid", content=bodies[0], headers=signed(bodies[0]))
        waited = time.monotonic() - started
    finally:
        release()
    assert response.status_code == 503 and int(response.headers["Retry-After"]) > 0
    assert waited < 3, f"answered after {waited:.1f} s, not within the 0.5 s bound"
    deadline = time.monotonic() + 30
    while True:  # the first attempt, blocked in its transaction, may still commit now that the lock is gone
        retry = quick_hook.post("/webhooks/sendgrid", content=bodies[0], headers=signed(bodies[0]))
        if retry.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert retry.status_code == 200
    assert retry.json()["applied"] + retry.json()["duplicates"] == len(items)
    assert provider_events(engine) == (len(items), len(items))
    assert totals(engine) == expected_totals(items)


@pytest.mark.postgres
def test_an_unreachable_database_is_a_503_not_a_500():
    "PostgreSQL down (nothing listens on its port): the post is answered 503 with Retry-After, quickly"
    url = f"postgresql+psycopg://postgres@127.0.0.1:{_free_port()}/postgres"
    engine = make_engine(url, connect_args={"connect_timeout": 2})
    app = create_app(web_settings(url, sendgrid_webhook_public_key=PUBLIC_KEY), engine=engine,
                     transport=RecordingTransport())
    body = json.dumps([{"event": "delivered", "sg_event_id": "down-1", "email": "a@example.com", "delivery_id": "1"}])
    with TestClient(app, base_url="http://testserver") as client:
        started = time.monotonic()
        response = client.post("/webhooks/sendgrid", content=body, headers=signed(body))
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert time.monotonic() - started < 6
    engine.dispose()


def serve_webhook(db_url: str, port: int, log_path: Path) -> subprocess.Popen:
    """`digest serve` with the webhook's key, its log in a file."""
    return _serve(db_url, port, log_path, DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY=PUBLIC_KEY)


def test_a_web_process_killed_mid_post_loses_no_event_it_acknowledged(db_url, tmp_path):
    "four clients post 40 posts to a real `digest serve`, SIGKILLed after its 5th answer: every event of every post answered 200 is stored"
    engine = make_engine(db_url)
    bodies, items = mixed_posts(engine, posts=40, per_post=100, prefix="kill")
    port = _free_port()
    server = serve_webhook(db_url, port, tmp_path / "serve.log")
    acknowledged, lock, answered = [], threading.Lock(), threading.Event()

    def client(mine: list[str]) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            for body in mine:
                try:
                    response = http.post("/webhooks/sendgrid", content=body, headers=signed(body))
                except httpx.TransportError:
                    return  # killed: this post was not acknowledged
                if response.status_code == 200:
                    with lock:
                        acknowledged.append(body)
                        if len(acknowledged) >= 5:
                            answered.set()

    try:
        threads = [threading.Thread(target=client, args=(bodies[n::4],)) for n in range(4)]
        for thread in threads:
            thread.start()
        assert answered.wait(timeout=60)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        for thread in threads:
            thread.join(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
    ids = {item["sg_event_id"] for body in acknowledged for item in json.loads(body)}
    with session_scope(engine) as session:
        stored = set(session.scalars(select(Event.provider_event_id).where(Event.provider_event_id.is_not(None))))
    assert 5 <= len(acknowledged) < len(bodies), "killed while posts were still being answered"
    assert ids <= stored, f"{len(ids - stored)} acknowledged events lost"
    engine.dispose()


def test_a_reader_erased_between_reading_a_post_and_writing_it_is_left_out_not_a_500(hook, db_url):
    "the post names two readers; one asks to be forgotten after the post's reading, before its writing: 200, the other's events stored, none of the erased one's"
    from sqlalchemy import event

    from digest.subscribers.subscriptions import forget

    engine = hook.app.state.ctx.engine
    staying, leaving = (sent_delivery(engine, sent_at=ago(1), week="2026-W48") for _ in range(2))
    items = [sg_event(staying, "delivered", "stay-1"), sg_event(leaving, "delivered", "leave-1"),
             sg_event(leaving, "bounce", "leave-2", type="bounce")]
    other = make_engine(db_url)
    erased = []

    def erase_first(connection) -> None:  # as the post's reading ends, before its writing begins
        if erased or not connection.get_execution_options().get("read_only", False):
            return
        erased.append(True)
        with session_scope(other) as session:
            forget(session=session, subscriber=session.get(Subscriber, leaving.subscriber_id), now=ago(0))

    event.listen(engine, "commit", erase_first)
    try:
        body = json.dumps(items)
        response = hook.post("/webhooks/sendgrid", content=body, headers=signed(body))
    finally:
        event.remove(engine, "commit", erase_first)
        other.dispose()
    assert erased and response.status_code == 200, response.text
    assert response.json() == {"applied": 1, "duplicates": 0, "ignored": 2}
    with session_scope(engine) as session:
        assert set(session.scalars(select(Event.provider_event_id).where(Event.provider_event_id.is_not(None)))) \
            == {"stay-1"}
        assert session.get(Subscriber, leaving.subscriber_id) is None
