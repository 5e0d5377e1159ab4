"""The Event Webhook's rules that its first mutation run found unheld (issue 22): what a post's events do to
their readers whatever their order, the unsubscribe each one records, and the store's bounds (a full store, a
post waiting past DIGEST_WEBHOOK_BUSY_SECONDS, a database that is away), each answered as SendGrid needs.

Through HTTP, signed as SendGrid signs (tests.test_webhook), on SQLite and PostgreSQL; the writing turn's lock
file is SQLite's."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import sqlite3
import threading
import time
from datetime import datetime, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError, OperationalError

from digest.web import create_app
from digest.web.webhook_store import (
    MAX_ADMITTED,
    RETRY_AFTER_SECONDS,
    StoreBusy,
    WebhookStore,
)
from storage.db import make_engine, session_scope
from storage.models import Subscriber
from storage.provider_events import change_standings
from tests.factories import RecordingTransport, add_subscribers
from tests.fixtures_web import web_settings
from tests.test_web_limits import run_apart
from tests.test_web_tracking import events, sent_delivery
from tests.test_webhook import PUBLIC_KEY, ago, post, sg_event, status_of

BUSY = {"error": "the store is busy: try again later"}


def hook_app(db_url: str, **settings) -> TestClient:
    engine = make_engine(db_url)
    app = create_app(web_settings(db_url, **{"sendgrid_webhook_public_key": PUBLIC_KEY, **settings}), engine=engine,
                     transport=RecordingTransport())
    return TestClient(app, base_url="http://testserver")


@pytest.fixture
def hook(db_url):
    with hook_app(db_url) as client:
        yield client
    client.app.state.ctx.engine.dispose()


# -- what a post's events do to their readers -------------------------------------------------------------------

@pytest.mark.parametrize("order", ["as sent", "reversed"])
def test_a_complaint_outranks_a_bounce_and_both_an_unsubscribe_whatever_their_order_in_the_post(hook, order):
    engine = hook.app.state.ctx.engine
    both, bounced_too, all_three = (sent_delivery(engine, sent_at=ago(1)) for _ in range(3))
    items = [sg_event(both, "unsubscribe", "o1"), sg_event(both, "bounce", "o2", type="bounce"),
             sg_event(bounced_too, "bounce", "o3", type="bounce"), sg_event(bounced_too, "spamreport", "o4"),
             sg_event(all_three, "unsubscribe", "o5"), sg_event(all_three, "spamreport", "o6"),
             sg_event(all_three, "bounce", "o7", type="bounce")]
    assert post(hook, items if order == "as sent" else items[::-1]).json()["applied"] == 7
    assert status_of(engine, both.subscriber_id) == "bounced"
    assert status_of(engine, bounced_too.subscriber_id) == "complained"
    assert status_of(engine, all_three.subscriber_id) == "complained"


def test_a_later_post_never_moves_a_reader_down_from_complained_or_bounced(hook):
    engine = hook.app.state.ctx.engine
    complained, bounced = sent_delivery(engine, sent_at=ago(2)), sent_delivery(engine, sent_at=ago(2))
    post(hook, [sg_event(complained, "spamreport", "d1"), sg_event(bounced, "bounce", "d2", type="bounce")])
    post(hook, [sg_event(complained, "bounce", "d3", type="bounce"), sg_event(complained, "unsubscribe", "d4"),
                sg_event(bounced, "unsubscribe", "d5")])
    assert status_of(engine, complained.subscriber_id) == "complained"
    assert status_of(engine, bounced.subscriber_id) == "bounced"
    assert events(engine, kind="unsubscribe", provider_event_id=None) == []  # nobody was unsubscribed by them


def test_an_unsubscribe_event_records_one_unsubscribe_with_its_delivery_issue_and_time(hook):
    "the reader's page and the stats read it: from which email, when; a second one changes nothing"
    from storage.models import Issue

    engine = hook.app.state.ctx.engine
    first = sent_delivery(engine, sent_at=ago(1))
    with session_scope(engine) as session:
        week = session.get(Issue, first.issue_id).week
    reader = sent_delivery(engine, sent_at=ago(1), week=week)  # a delivery id that is not its issue's id
    assert reader.id != reader.issue_id
    before = datetime.now(timezone.utc).replace(microsecond=0)
    post(hook, [sg_event(reader, "unsubscribe", "n1")])
    post(hook, [sg_event(reader, "group_unsubscribe", "n2", asm_group_id=1)])
    # Beside the provider's two events, one unsubscribe of ours: the reader's page and the stats count these.
    (recorded,) = events(engine, kind="unsubscribe", provider_event_id=None)
    assert (recorded.subscriber_id, recorded.delivery_id, recorded.issue_id, recorded.source, recorded.machine,
            recorded.detail) == (reader.subscriber_id, reader.id, reader.issue_id, "webhook", False, "")
    with session_scope(engine) as session:
        subscriber = session.get(Subscriber, reader.subscriber_id)
        assert subscriber.status == "unsubscribed"
        assert before <= subscriber.unsubscribed_at <= datetime.now(timezone.utc)
        assert subscriber.updated_at == subscriber.unsubscribed_at



def test_the_last_id_the_delivery_table_holds_is_still_a_delivery(hook):
    "ids run up to 2**31 - 1 (an INTEGER column); the event for that delivery is applied to it, not to its address"
    from sqlalchemy import update

    from storage.events import MAX_ID
    from storage.models import Delivery

    engine = hook.app.state.ctx.engine
    reader = sent_delivery(engine, sent_at=ago(1))
    with session_scope(engine) as session:
        session.execute(update(Delivery).where(Delivery.id == reader.id).values(id=MAX_ID))
    item = sg_event(reader, "open", "m1")
    item["delivery_id"] = str(MAX_ID)
    assert post(hook, [item]).json() == {"applied": 1, "duplicates": 0, "ignored": 0}
    assert [e.delivery_id for e in events(engine, provider_event_id="m1")] == [MAX_ID]

# -- the key ----------------------------------------------------------------------------------------------------

def test_a_key_that_is_not_a_public_key_refuses_every_post_with_a_log_line(db_url, caplog):
    "a PEM pasted with its lines, or a truncated key: 503 (SendGrid retries), nothing recorded, the log says why"
    with hook_app(db_url, sendgrid_webhook_public_key="-----BEGIN PUBLIC KEY-----") as client:
        reader = sent_delivery(client.app.state.ctx.engine, sent_at=ago(1))
        with caplog.at_level("ERROR", logger="digest.web"):
            response = post(client, [sg_event(reader, "bounce", "k1", type="bounce")])
        assert (response.status_code, response.json()) == (503, {"error": "webhook verification key unusable"})
        assert any("not a base64 DER public key" in r.getMessage() for r in caplog.records)
        assert status_of(client.app.state.ctx.engine, reader.subscriber_id) == "active"
    client.app.state.ctx.engine.dispose()


# -- the store's bounds -----------------------------------------------------------------------------------------

def test_a_full_store_answers_503_with_retry_after_and_every_post_gives_its_place_back(hook):
    engine, store = hook.app.state.ctx.engine, hook.app.state.ctx.webhook_store()
    reader = sent_delivery(engine, sent_at=ago(1))
    for n in range(MAX_ADMITTED + 4):  # more posts than places, one after another: each leaves its place
        assert post(hook, [sg_event(reader, "delivered", f"p{n}")]).status_code == 200
    assert hook.post("/webhooks/sendgrid", content="[]").status_code == 403  # a refused post leaves too
    taken = [store.admit() for _ in range(MAX_ADMITTED)]
    assert all(taken)
    full = post(hook, [sg_event(reader, "bounce", "p-full", type="bounce")])
    assert (full.status_code, full.json(), full.headers["Retry-After"]) == (503, BUSY, str(RETRY_AFTER_SECONDS))
    assert status_of(engine, reader.subscriber_id) == "active"
    store.leave()
    assert post(hook, [sg_event(reader, "bounce", "p-full", type="bounce")]).json()["applied"] == 1


def test_a_post_waiting_past_the_busy_seconds_for_another_writer_is_a_503_and_its_retry_a_duplicate(
        sqlite_url, tmp_path, caplog):
    "another process holds the writing turn: 503 with Retry-After within the bound; the post, already begun, "
    "finishes once the turn is free, and SendGrid's retry finds its event stored"
    with hook_app(sqlite_url, webhook_busy_seconds=0.3) as client:
        engine = client.app.state.ctx.engine
        reader = sent_delivery(engine, sent_at=ago(1))
        item = sg_event(reader, "bounce", "w1", type="bounce")
        with open(tmp_path / "digest.db-webhook.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            with caplog.at_level(logging.WARNING, logger="digest.web"):
                busy = post(client, [item])
            assert (busy.status_code, busy.json(), busy.headers["Retry-After"]) == (503, BUSY, "30")
            assert [r.getMessage() for r in caplog.records if r.name == "digest.web"] == [
                "SendGrid webhook post answered 503: not applied within 0.3 s (DIGEST_WEBHOOK_BUSY_SECONDS)"]
            assert status_of(engine, reader.subscriber_id) == "active"
            # A second post waits behind the first for SQLite's one webhook thread; its wait runs out before its
            # transaction began, so it is not applied at all, not even once the turn is free.
            queued = sg_event(reader, "delivered", "w2")
            assert post(client, [queued]).status_code == 503
        retry = post(client, [item])
        assert retry.json() == {"applied": 0, "duplicates": 1, "ignored": 0}
        assert status_of(engine, reader.subscriber_id) == "bounced"
        assert post(client, [queued]).json() == {"applied": 1, "duplicates": 0, "ignored": 0}
    engine.dispose()


def locked() -> OperationalError:
    "a lock held past its timeout, the driver's first line longer than a log line should be"
    return OperationalError("INSERT INTO event …", {},
                            sqlite3.OperationalError("database is locked" + " (waiting for the writer)" * 10))


def test_the_store_answers_busy_for_a_database_that_is_away_and_raises_what_waiting_cannot_fix(caplog):
    "a lock held past its timeout is a 503 SendGrid retries; a constraint broken is a bug, a 500 in the log"
    store = WebhookStore(dialect="sqlite", busy_seconds=5)

    def fails(error):
        raise error

    try:
        with caplog.at_level(logging.WARNING, logger="digest.web"):
            with pytest.raises(StoreBusy):
                run_apart(store.apply(fails, locked()))
        first_line = str(locked()).splitlines()[0]
        assert len(first_line) > 200  # the log keeps the first 200 characters of it
        assert [r.getMessage() for r in caplog.records if r.name == "digest.web"] == [
            f"SendGrid webhook post answered 503: database unavailable ({first_line[:200]})"]
        with pytest.raises(IntegrityError):
            run_apart(store.apply(fails, IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE"))))
        with pytest.raises(OperationalError):
            run_apart(store.apply(fails, OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: x"))))
        assert run_apart(store.apply(lambda a, b: a + b, 2, 3)) == 5
    finally:
        store.close()


# -- refusals -----------------------------------------------------------------------------------------------------

def test_every_refusal_is_the_same_answer_and_only_the_log_says_why(hook, caplog):
    "a forger learns nothing from the answer; the operator finds a clock skew or a wrong key in the log"
    from tests.test_webhook import OTHER_KEY, SIGNATURE, TIMESTAMP, signed

    body = '[{"event": "bounce", "sg_event_id": "r1"}]'
    stale = signed(body, at=time.time() - 3600)
    attempts = {"stale": (body.encode(), stale), "forged": (body.encode(), signed(body, key=OTHER_KEY)),
                "not utf-8": (b"[\xff]", {SIGNATURE: stale[SIGNATURE], TIMESTAMP: str(int(time.time()))})}
    logged = {}
    for name, (content, headers) in attempts.items():
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="digest.web"):
            response = hook.post("/webhooks/sendgrid", content=content, headers=headers)
        assert (response.status_code, response.json()) == (403, {"error": "signature or timestamp not accepted"})
        logged[name] = [r.getMessage() for r in caplog.records if r.name == "digest.web"]
    assert logged == {"stale": [f"SendGrid webhook post refused: missing signature or stale timestamp "
                                f"{stale[TIMESTAMP]!r}"],
                      "forged": ["SendGrid webhook post refused: bad signature"],
                      "not utf-8": []}



def test_a_signed_body_that_is_not_an_event_array_is_told_what_was_expected(hook):
    "someone wiring the webhook by hand (a test post from a script) reads what to send instead"
    from tests.test_webhook import signed

    for body in ('{"event": "open"}', "[1]"):
        response = hook.post("/webhooks/sendgrid", content=body, headers=signed(body))
        assert (response.status_code, response.json()) == (400, {"error": "expected a JSON array of event objects"})

# -- the guardrail, once the post is committed --------------------------------------------------------------------

def test_a_post_that_takes_an_issue_past_the_bounce_limit_pauses_it_and_mails_the_alert(db_url, tmp_path):
    "500 outcomes, 40 of them bounces (8 % > 5 %): the post is applied, then the issue paused and the operator told"
    from storage.models import Delivery, DeliveryStatus, Issue, Segment

    now = datetime.now(timezone.utc)
    engine = make_engine(db_url)
    with session_scope(engine) as session:
        issue = Issue(week="2026-W48", created_at=now, fanned_out_at=now)
        session.add(issue)
        session.flush()
        segment = Segment(issue_id=issue.id, key="all", comparison_ids="")
        readers = [Subscriber(email=f"g{n}@example.com", email_key=f"g{n}@example.com") for n in range(500)]
        session.add_all([segment, *readers])
        session.flush()
        rows = [Delivery(issue_id=issue.id, subscriber_id=r.id, segment_id=segment.id, status=DeliveryStatus.sent,
                         sent_at=now) for r in readers]
        session.add_all(rows)
        session.flush()
        sent = [(row.id, reader.email) for row, reader in zip(rows, readers)]
    items = [{"email": email, "timestamp": int(now.timestamp()), "event": "bounce" if n < 40 else "delivered",
              "type": "bounce", "sg_event_id": f"g-{d}", "delivery_id": str(d)} for n, (d, email) in enumerate(sent)]
    settings = web_settings(db_url, sendgrid_webhook_public_key=PUBLIC_KEY, alert_email="ops@example.com",
                            outbox_dir=tmp_path / "outbox")
    with TestClient(create_app(settings, engine=engine, transport=RecordingTransport())) as client:
        response = post(client, items)
    assert response.status_code == 200 and response.json()["applied"] == 500
    with session_scope(engine) as session:
        paused = session.scalars(select(Issue).where(Issue.week == "2026-W48")).one()
        assert paused.pause_reason == "guardrail: bounce rate 8.0% (40 of 500) > 5.0%" and paused.paused_at
    [alert] = list((tmp_path / "outbox").glob("*.eml"))
    assert "To: ops@example.com" in alert.read_text()
    engine.dispose()


@pytest.mark.parametrize("dialect, at_once", [("sqlite", 1), ("postgresql", 2)])
def test_posts_are_applied_one_at_a_time_on_sqlite_two_at_once_on_postgresql_on_named_threads(dialect, at_once):
    "SQLite has one writer, so a second thread would only wait for the turn; PostgreSQL's round trips leave room "
    "for a second post (benchmarks/webhook.py). The threads carry the store's name in an operator's thread dump."
    store = WebhookStore(dialect=dialect, busy_seconds=5)
    lock, running, most, names = threading.Lock(), [0], [0], set()

    def apply_one():
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
            names.add(threading.current_thread().name)
        time.sleep(0.2)
        with lock:
            running[0] -= 1

    async def three_posts():
        await asyncio.gather(*(store.apply(apply_one) for _ in range(3)))

    try:
        run_apart(three_posts())
    finally:
        store.close()
    assert most[0] == at_once
    assert len(names) == at_once and all(name.startswith("digest-webhook_") for name in names), names


def test_closing_the_store_waits_for_a_post_already_being_applied():
    "a post past its bound but already in its transaction is let finish (a commit cannot be called back)"
    store = WebhookStore(dialect="sqlite", busy_seconds=0.05)
    done = []

    def slow():
        time.sleep(0.5)
        done.append(True)

    with pytest.raises(StoreBusy):
        run_apart(store.apply(slow))
    assert done == []
    store.close()
    assert done == [True]


@pytest.mark.postgres
def test_two_posts_naming_the_same_readers_in_opposite_standings_never_deadlock_on_postgresql(postgres_url):
    "one post unsubscribes A and bounces B, another unsubscribes B and bounces A, both at once: each first locks "
    "its readers in id order, so one waits for the other instead of each holding the reader the other needs"
    engine = make_engine(postgres_url)
    a, b = add_subscribers(engine, 2)
    now = datetime(2026, 12, 1, 12, tzinfo=timezone.utc)
    errors: list[BaseException] = []
    try:
        with engine.connect() as holder:  # holds the event table: each post stops after its first UPDATE
            holder.execute(text("LOCK TABLE event IN EXCLUSIVE MODE"))

            def post(unsubscribed: int, bounced: int) -> None:
                try:
                    with session_scope(engine) as session:
                        change_standings(session=session, unsubscribed={unsubscribed: (None, None)},
                                         bounced=[bounced], complained=[], now=now)
                except BaseException as error:  # noqa: BLE001 — the test reports it
                    errors.append(error)

            posts = [threading.Thread(target=post, args=pair) for pair in ((a, b), (b, a))]
            for thread in posts:
                thread.start()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:  # both posts waiting on a lock
                waiting = holder.execute(text("SELECT count(*) FROM pg_locks WHERE NOT granted")).scalar_one()
                if waiting >= 2:
                    break
                time.sleep(0.02)
            holder.rollback()
        for thread in posts:
            thread.join(30)
        assert errors == []
        assert {status_of(engine, a), status_of(engine, b)} == {"bounced"}
    finally:
        engine.dispose()
