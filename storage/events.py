"""Opens recorded per pixel fetch (digest.track.tracking.record_opens): on the DB-API cursor as well."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Connection

from storage.raw import Raw, time_reader


class OpenTarget(NamedTuple):
    """A delivery an open may be recorded on, with what its links must match (digest.links.RecipientRef.fits)."""

    subscriber_id: int
    issue_id: int
    sent_at: datetime | None
    link_tag: int
    accepts_untagged_links: bool


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


_INSERT_EVENT = (
    "INSERT INTO event (kind, source, occurred_at, delivery_id, subscriber_id, issue_id, machine, provider_event_id, "
    "detail) VALUES (:kind, :source, :occurred_at, :delivery_id, :subscriber_id, :issue_id, :machine, "
    ":provider_event_id, :detail)"
)
