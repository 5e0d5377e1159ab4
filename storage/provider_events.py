"""The Event Webhook's SQL (digest.track.events decides what a post means): a post of ~1,000 events costs a
handful of statements, whatever its size — who its events name, their rows in one INSERT, what they say of
their readers in one UPDATE per standing.

One INSERT … SELECT over the post's rows as one JSON value, ON CONFLICT (provider_event_id) DO NOTHING
RETURNING the ids it inserted: a replay (SendGrid retries a post until it sees a 2xx, from any of its
senders, possibly while the first is still being applied) inserts nothing, and on PostgreSQL waits for the
first to commit or roll back instead of counting the events twice. The ORM's Event object per event cost
~0.6 ms of CPU an event (benchmarks/webhook.py: 1,450 events/s on SQLite).

Locks on PostgreSQL, always in this order so two posts never deadlock: the event ids (the caller sorts
the rows), the subscribers (ascending id, FOR NO KEY UPDATE: the event rows' foreign keys hold KEY SHARE
on them), then the issues (storage.guardrail.add_reports, ascending id).
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from sqlalchemy.exc import IntegrityError

from storage.events import MAX_ID, insert_events
from storage.models import SubscriberStatus
from storage.raw import Raw, sqlite_time

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlmodel import Session


# What the INSERT raises when a reader the post names was erased after the post's reading (the events'
# subscriber key refuses them): the caller finds its targets again, under the write lock.
TARGET_GONE = IntegrityError


@contextmanager
def writing_turn(engine: Engine) -> Iterator[None]:
    """SQLite: wait for this database's webhook writers of every process in turn, on a lock file beside it.

    SQLite lets one process write at a time, and one that finds the lock taken sleeps and tries again (1, 2,
    5 … up to 100 ms a time): two web processes' posts waited out those sleeps rather than each other, and
    `digest serve --workers 2` took fewer events a second than one worker (benchmarks/webhook.py). The
    kernel wakes the next waiter of a file lock as soon as it is released. PostgreSQL: nothing to wait for."""
    path = engine.url.database if engine.dialect.name == "sqlite" else None
    if not path or path == ":memory:":
        yield
        return
    with open(f"{path}-webhook.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class DeliveryTarget(NamedTuple):
    id: int
    issue_id: int
    subscriber_id: int
    email_key: str


def deliveries_named(*, session: Session, ids: Iterable[int]) -> dict[int, DeliveryTarget]:
    """delivery id → its issue, subscriber and the subscriber's address, for the deliveries among ``ids``
    (outside 1 … MAX_ID: none)."""
    ids = sorted({i for i in ids if 0 < i <= MAX_ID})
    if not ids:
        return {}
    raw = Raw(session)
    rows = raw.fetch("SELECT d.id, d.issue_id, d.subscriber_id, s.email_key FROM delivery d "
                     f"JOIN subscriber s ON s.id = d.subscriber_id WHERE d.id {raw.among('ids')}",
                     {"ids": raw.ids(ids)})
    return {row[0]: DeliveryTarget(*row) for row in rows}


def subscribers_named(*, session: Session, email_keys: Iterable[str]) -> dict[str, int]:
    """email key → subscriber id, for the keys among ``email_keys`` that are someone's."""
    keys = sorted(set(email_keys))
    if not keys:
        return {}
    raw = Raw(session)
    return dict(raw.fetch(f"SELECT email_key, id FROM subscriber WHERE email_key {raw.among('keys')}",
                          {"keys": raw.array(keys)}))


# A row: (kind, occurred_at, delivery_id, subscriber_id, issue_id, machine, provider_event_id, detail).
_COLUMNS = "kind, occurred_at, delivery_id, subscriber_id, issue_id, machine, provider_event_id, detail"
_INSERT_SQLITE = (
    f"INSERT INTO event ({_COLUMNS}, source) SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, "
    "value ->> 5, value ->> 6, value ->> 7, 'webhook' FROM json_each(:rows) WHERE true "  # WHERE: SQLite's upsert parse
    "ON CONFLICT (provider_event_id) DO NOTHING RETURNING provider_event_id"
)
_INSERT_POSTGRES = (
    f"INSERT INTO event ({_COLUMNS}, source) SELECT r ->> 0, (r ->> 1)::timestamp, (r ->> 2)::int, (r ->> 3)::int, "
    "(r ->> 4)::int, (r ->> 5)::boolean, r ->> 6, r ->> 7, 'webhook' FROM json_array_elements(CAST(:rows AS json)) r "
    "ON CONFLICT (provider_event_id) DO NOTHING RETURNING provider_event_id"
)


def event_time(moment: datetime) -> str:
    """An event's time as a row for `insert_provider_events` holds it: naive UTC text, as SQLite stores it
    (storage.raw.sqlite_time) and as PostgreSQL reads a timestamp."""
    return sqlite_time(moment)


def insert_provider_events(*, session: Session, rows: list[tuple]) -> set[str]:
    """Insert the rows (see above; occurred_at as `event_time` gives it, machine 0 or 1) in one statement, skipping a provider event id already stored; the ids of
    those inserted (a row without an id is always inserted). ``rows`` sorted by provider event id, with no
    id twice: two posts holding the same events then lock them in the same order."""
    if not rows:
        return set()
    raw = Raw(session)
    sql = _INSERT_POSTGRES if raw.dialect == "postgresql" else _INSERT_SQLITE
    return {row[0] for row in raw.fetch(sql, {"rows": json.dumps(rows, ensure_ascii=False)})}


def change_standings(*, session: Session, unsubscribed: dict[int, tuple[int | None, int | None]], bounced: Iterable[int],
                     complained: Iterable[int], now: datetime) -> None:
    """What a post's events say of their readers, one UPDATE per standing (digest.subscribers.subscriptions
    says the rules): unsubscribed (subscriber id → the delivery and issue it came from; an unsubscribe
    event is recorded for each reader it unsubscribes), then bounced, then complained — a complaint
    outranks a bounce, and both an unsubscribe, whatever their order in the post."""
    bounced, complained = set(bounced), set(complained)
    everyone = sorted(set(unsubscribed) | bounced | complained)
    if not everyone:
        return
    raw = Raw(session)
    if raw.dialect == "postgresql":
        raw.fetch(f"SELECT id FROM subscriber WHERE id {raw.among('ids')} ORDER BY id FOR NO KEY UPDATE",
                  {"ids": raw.ids(everyone)})
    when = raw.time(now)
    gone = (SubscriberStatus.bounced.value, SubscriberStatus.complained.value)
    if unsubscribed:
        changed = raw.fetch(f"UPDATE subscriber SET status = :status, unsubscribed_at = :now, updated_at = :now "
                            f"WHERE id {raw.among('ids')} AND status NOT IN (:bounced, :complained, :status) "
                            "RETURNING id", {"ids": raw.ids(sorted(unsubscribed)), "now": when, "bounced": gone[0],
                                             "complained": gone[1], "status": SubscriberStatus.unsubscribed.value})
        insert_events(connection=session, rows=[
            dict(kind="unsubscribe", source="webhook", occurred_at=now, delivery_id=unsubscribed[i][0],
                 subscriber_id=i, issue_id=unsubscribed[i][1], machine=False, provider_event_id=None, detail="")
            for (i,) in sorted(changed)])
    if bounced:
        raw.run(f"UPDATE subscriber SET status = :bounced, updated_at = :now WHERE id {raw.among('ids')} "
                "AND status NOT IN (:bounced, :complained)",
                {"ids": raw.ids(sorted(bounced)), "now": when, "bounced": gone[0], "complained": gone[1]})
    if complained:
        raw.run(f"UPDATE subscriber SET status = :complained, updated_at = :now WHERE id {raw.among('ids')} "
                "AND status <> :complained", {"ids": raw.ids(sorted(complained)), "now": when, "complained": gone[1]})
