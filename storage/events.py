"""Event rows: opens and clicks recorded per pixel fetch or click (digest.track.opens, on the DB-API cursor as
well). The provider's events, each recorded once, have their own module: storage.provider_events."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Connection

from storage.raw import Raw, time_reader

# Event kinds are stored under the names they were first recorded with (the provider's): databases hold
# them and `digest stats` counts them. Two of ours are stored under another name.
STORED_KIND = {"complaint": "spamreport", "soft_bounce": "blocked"}

# Ids are INTEGER columns: 32-bit signed on PostgreSQL (64 on SQLite). A larger number in a query is an error
# there, not an empty result (10**30 was a 500, and so was 2**63 - 1 on PostgreSQL), so an id outside
# 1 … 2**31 - 1 names nothing and never reaches the database.
MAX_ID = 2**31 - 1


class OpenTarget(NamedTuple):
    """A delivery an open or a click may be recorded on, with what its links must match
    (digest.links.RecipientRef.fits)."""

    subscriber_id: int
    issue_id: int
    sent_at: datetime | None
    link_tag: int
    accepts_untagged_links: bool


def event_row(*, kind: str, source: str, now: datetime, detail: str = "", machine: bool = False,
              delivery_id: int | None = None, subscriber_id: int | None = None, issue_id: int | None = None,
              provider_event_id: str | None = None) -> dict:
    """An Event row (every column but id) for `insert_events`."""
    return dict(kind=kind, source=source, occurred_at=now, delivery_id=delivery_id, subscriber_id=subscriber_id,
                issue_id=issue_id, machine=machine, provider_event_id=provider_event_id, detail=detail[:2000])


def open_targets(*, connection: Connection, ids: Sequence[int]) -> dict[int, OpenTarget]:
    """delivery id → its `OpenTarget`, for the deliveries among ``ids`` whose subscriber still exists.

    The subscriber's tag comes in the same statement (a join on its primary key): checking it costs the
    pixel no query of its own."""
    raw = Raw(connection)
    rows = raw.fetch("SELECT d.id, d.subscriber_id, d.issue_id, d.sent_at, s.link_tag, s.accepts_untagged_links "
                     f"FROM delivery d JOIN subscriber s ON s.id = d.subscriber_id WHERE d.id {raw.among('ids')}",
                     {"ids": raw.ids(ids)})
    read_time = time_reader(connection.dialect)
    return {row[0]: OpenTarget(row[1], row[2], read_time(row[3]), row[4], bool(row[5])) for row in rows}


def insert_events(*, connection: Connection, rows: list[dict]) -> None:
    """Insert Event rows (dicts of every column but id) in one executemany."""
    raw = Raw(connection)
    raw.run_many(_INSERT_EVENT, [{**row, "occurred_at": raw.time(row["occurred_at"])} for row in rows])


def insert_opens(*, connection: Connection, rows: list[tuple[datetime, int, int, int, bool, str]]) -> None:
    """Insert pixel opens, each (occurred_at, delivery_id, subscriber_id, issue_id, machine, detail), in one
    executemany: the pixel's writer calls this for every group of opens, and `event_row` dicts copied
    for `insert_events` cost it ~2 µs an open (py-spy, benchmarks/tracking.py)."""
    raw = Raw(connection)
    time = raw.time
    raw.run_many(_INSERT_OPEN, [{"occurred_at": time(at), "delivery_id": delivery_id, "subscriber_id": subscriber_id,
                                 "issue_id": issue_id, "machine": machine, "detail": detail}
                                for at, delivery_id, subscriber_id, issue_id, machine, detail in rows])


_INSERT_OPEN = (
    "INSERT INTO event (kind, source, occurred_at, delivery_id, subscriber_id, issue_id, machine, detail) "
    "VALUES ('open', 'pixel', :occurred_at, :delivery_id, :subscriber_id, :issue_id, :machine, :detail)"
)
_INSERT_EVENT = (
    "INSERT INTO event (kind, source, occurred_at, delivery_id, subscriber_id, issue_id, machine, provider_event_id, "
    "detail) VALUES (:kind, :source, :occurred_at, :delivery_id, :subscriber_id, :issue_id, :machine, "
    ":provider_event_id, :detail)"
)
