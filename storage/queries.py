"""The SQL of the weekly run, in one place. Keyword-only functions over a Session.

Each function runs inside the caller's transaction; the caller decides what commits together.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import Connection, bindparam, false, func, or_, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import selectinload
from sqlmodel import Session

from digest.selection import ComparisonFacts
from storage.models import (
    Comparison,
    Delivery,
    DeliveryStatus,
    Issue,
    IssueComparison,
    Segment,
    SendThrottle,
    Subscriber,
    SubscriberStatus,
    Tool,
)
from storage.types import UTCDateTime


def find_issue(*, session: Session, week: str) -> Issue | None:
    return session.execute(select(Issue).where(Issue.week == week)).scalars().first()


def unfinished_issues(*, session: Session) -> list[Issue]:
    """Issues fanned out but not finished: a crash or an outage left deliveries to send."""
    query = select(Issue).where(Issue.fanned_out_at.is_not(None), Issue.completed_at.is_(None)).order_by(Issue.id)
    return list(session.execute(query).scalars())


def _facts(session: Session, comparison_filter) -> list[ComparisonFacts]:
    rows = session.execute(
        select(Comparison.id, Comparison.category, Comparison.published_at, Comparison.community_votes)
        .where(comparison_filter)
    ).all()
    ids = [row.id for row in rows]
    pcts: dict[int, list[int]] = {comparison_id: [] for comparison_id in ids}
    if ids:
        for comparison_id, pct in session.execute(
            select(Tool.comparison_id, Tool.panel_ship_pct).where(Tool.comparison_id.in_(ids)).order_by(Tool.position)
        ):
            pcts[comparison_id].append(pct or 0)
    return [
        ComparisonFacts(id=row.id, category=row.category, published_at=row.published_at,
                        ship_pcts=tuple(pcts[row.id]), community_votes=row.community_votes or 0)
        for row in rows
    ]


def _unclaimed(now: datetime):
    # ``claimed`` narrows the search to an index range; issue_comparison stays the record.
    claimed = select(IssueComparison.comparison_id).where(IssueComparison.comparison_id == Comparison.id)
    return (Comparison.claimed == false()) & (Comparison.published_at <= now) & ~claimed.exists()


def claimable_comparisons(*, session: Session, now: datetime) -> list[ComparisonFacts]:
    """Published by ``now`` and in no issue yet: what an issue opened now would claim."""
    return _facts(session, _unclaimed(now))


def claimed_comparisons(*, session: Session, issue_id: int) -> list[ComparisonFacts]:
    claimed = select(IssueComparison.comparison_id).where(IssueComparison.issue_id == issue_id)
    return _facts(session, Comparison.id.in_(claimed))


def claim_comparisons(*, session: Session, issue_id: int, now: datetime) -> int:
    """Claim every published, unclaimed comparison into the issue; returns how many.

    ON CONFLICT DO NOTHING on the unique comparison_id: a comparison another issue claimed in a racing
    transaction is simply not ours.
    """
    result = session.execute(
        text(
            "INSERT INTO issue_comparison (issue_id, comparison_id, rank) "
            "SELECT :issue_id, c.id, 0 FROM comparison c "
            "WHERE c.claimed = false AND c.published_at <= :now AND NOT EXISTS "
            "(SELECT 1 FROM issue_comparison ic WHERE ic.comparison_id = c.id) "
            "ON CONFLICT (comparison_id) DO NOTHING"
        ).bindparams(bindparam("now", type_=UTCDateTime())),
        {"issue_id": issue_id, "now": now},
    )
    session.execute(text("UPDATE comparison SET claimed = true WHERE id IN "
                         "(SELECT comparison_id FROM issue_comparison WHERE issue_id = :issue_id)"),
                    {"issue_id": issue_id})
    return result.rowcount


def set_ranks(*, session: Session, issue_id: int, ranked_ids: Sequence[int]) -> None:
    statement = (
        update(IssueComparison)
        .where(IssueComparison.issue_id == issue_id, IssueComparison.comparison_id == bindparam("cid"))
        .values(rank=bindparam("position"))
    )
    session.connection().execute(
        statement, [{"cid": cid, "position": position} for position, cid in enumerate(ranked_ids)]
    )


def _audience(now: datetime):
    return (Subscriber.status == SubscriberStatus.active.value) & or_(
        Subscriber.paused_until.is_(None), Subscriber.paused_until <= now
    )


def audience_category_sets(*, session: Session, now: datetime) -> dict[str, int]:
    """Active, unpaused subscribers counted by the categories they follow."""
    rows = session.execute(
        select(Subscriber.categories, func.count()).where(_audience(now)).group_by(Subscriber.categories)
    )
    return {categories: count for categories, count in rows}


def fan_out(*, session: Session, issue_id: int, segment_id: int, category_sets: Sequence[str], now: datetime) -> int:
    """One pending delivery per active subscriber following one of ``category_sets``.

    INSERT … SELECT in the database: the audience of a million subscribers never passes through Python.
    A plain INSERT: an issue's deliveries are only ever inserted in the transaction that creates the
    issue, one segment per category set, so nothing can conflict — and if a planning bug ever put one
    subscriber in two segments, the unique (subscriber, issue) fails the whole opening loudly rather than
    drop a row. (ON CONFLICT DO NOTHING cost ~20 % of the fan-out on PostgreSQL: docs/benchmarks.md.)
    """
    statement = text(
        "INSERT INTO delivery (issue_id, subscriber_id, segment_id, status, attempts, ambiguous_resends, created_at) "
        "SELECT :issue_id, s.id, :segment_id, 'pending', 0, 0, :now FROM subscriber s "
        "WHERE s.status = 'active' AND (s.paused_until IS NULL OR s.paused_until <= :now) "
        "AND s.categories IN :category_sets"
    ).bindparams(bindparam("category_sets", expanding=True), bindparam("now", type_=UTCDateTime()))
    result = session.execute(
        statement,
        {"issue_id": issue_id, "segment_id": segment_id, "now": now, "category_sets": list(category_sets)},
    )
    return result.rowcount


def refresh_delivery_statistics(*, session: Session) -> None:
    """PostgreSQL: re-read delivery's statistics after a fan-out, in the fan-out's own transaction.

    A fan-out can multiply the table by ten in one transaction, long before autovacuum looks at it. With
    the old statistics the planner guesses a handful of an issue's rows are pending and plans the claim as
    "fetch them all, then sort" (2.4 s a batch at a million) instead of walking the claim index in order
    (3 ms). ANALYZE samples the rows this transaction inserted; it takes 0.2 s at a million.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("ANALYZE delivery"))


def issue_segments(*, session: Session, issue_id: int) -> list[Segment]:
    return list(session.execute(select(Segment).where(Segment.issue_id == issue_id).order_by(Segment.id)).scalars())


def load_comparisons(*, session: Session, ids: Sequence[int]) -> list[Comparison]:
    """Comparisons with their tools and reviews, in the order of ``ids``."""
    query = (
        select(Comparison)
        .where(Comparison.id.in_(list(ids)))
        .options(selectinload(Comparison.tools).selectinload(Tool.reviews))
    )
    by_id = {c.id: c for c in session.execute(query).scalars()}
    return [by_id[i] for i in ids if i in by_id]


class BatchRow(NamedTuple):
    """One recipient of a claimed batch (a tuple: a thousand are built per batch)."""

    delivery_id: int
    subscriber_id: int
    email: str
    name: str
    link_tag: int  # goes into the recipient's links (digest.links)


@dataclass(frozen=True)
class ClaimedBatch:
    segment_id: int
    rows: list[BatchRow]
    resent: int  # rows taken over from a sender whose outcome is unknown (counted as ambiguous)
    position: tuple[int, int] = (0, 0)  # (segment_id, id) of the last row leased: pass as ``after`` next time


def claim_batch(
    *, session: Session, issue_id: int, owner: str, now: datetime, lease_until: datetime, limit: int,
    dead_owners: Sequence[str] = (), after: tuple[int, int] | None = None,
) -> ClaimedBatch | None:
    """Lease up to ``limit`` sendable deliveries of one segment (one content per request).

    Sendable: pending, or 'sending' under a lease that ran out or belongs to a process known dead. Rows
    taken over from 'sending' may already have been handed to the provider, so they are counted in
    ``ambiguous_resends``. On PostgreSQL FOR UPDATE SKIP LOCKED lets several senders claim side by side;
    SQLite serialises writers (BEGIN IMMEDIATE, see storage.db).

    The statements run on the DB-API cursor (`_Raw`): they run once per batch over a thousand rows, and
    SQLAlchemy's statement and row handling cost more than the statements did (benchmarks/send.py).
    """
    raw = _Raw(session)
    params = {"issue_id": issue_id, "limit": limit, "owner": owner}
    # Each query walks the issue's rows in the (issue_id, segment_id, id) index, in order, and stops at
    # ``limit``; status is a filter, not part of the index, so that leasing and closing a row never touch
    # an index (see Delivery). Stale rows first: they are older.
    # ``after``: where this sender's last batch ended. Every row before it is sent or leased, so a claim
    # from the start would step over all of them: a million rows half-way through a million. Starting
    # after our last batch skips them; a row left behind (a batch given back, a row another sender
    # skipped) is found by the scan from the start that follows when nothing is left after the position.
    # The same holds for the 'sending' rows, so stale leases are looked for when a send starts and when
    # nothing is left after the position, not before every batch: the caller asks again without ``after``.
    if after is not None:  # only pending rows after the position: a caller resuming a send
        # Two queries, not "(segment_id, id) > (:segment, :last)": SQLite bounds an index range by the
        # first column of a row value only, so that one read the whole segment up to the position again
        # for every batch (11 ms a claim at 200,000 recipients, growing with the list).
        segment, last = after
        candidates = raw.fetch(_candidates_sql(raw.dialect, _SAME_SEGMENT), {**params, "segment": segment, "last": last}) \
            or raw.fetch(_candidates_sql(raw.dialect, _LATER_SEGMENTS), {**params, "segment": segment})
    else:
        # Stale: a lease that ran out, or belongs to a process known dead, or is ``owner``'s own, still
        # open: a claim whose commit succeeded but whose answer was lost (the database went away at that
        # moment) and was then retried. Those rows never left, so they are not counted as ambiguous. The
        # sender records its last batch in the same transaction, before this (Sender._send_in_turn).
        stale = _STALE + (f" OR d.lease_owner {raw.among('dead')})" if dead_owners else ")")
        candidates = raw.fetch(_candidates_sql(raw.dialect, stale),
                               {**params, "now": raw.time(now), "dead": raw.array(dead_owners)}) \
            or raw.fetch(_candidates_sql(raw.dialect, _PENDING), params)
    if not candidates:
        return None
    # d.id, d.segment_id, d.status, d.lease_owner, s.id, s.email, s.name, s.status, s.link_tag
    segment_id = candidates[0][1]
    chosen = [row for row in candidates if row[1] == segment_id]
    ids = [row[0] for row in chosen]
    leased = DeliveryStatus.sending.value
    resent = sum(1 for row in chosen if row[2] == leased and row[3] != owner)
    raw.run(_LEASE_SQL.format(among=raw.among("ids")),
            {"owner": owner, "previous": owner, "until": raw.time(lease_until), "ids": raw.ids(ids)})
    active = SubscriberStatus.active.value  # looked up once: an enum .value costs a call per row
    gone = [row for row in chosen if row[7] != active]
    if gone:
        erased = [row[0] for row in gone if row[4] is None]
        if erased:  # written by a fan-out while an erase ran (see Delivery): erasing meant deleting them
            raw.run(f"DELETE FROM delivery WHERE id {raw.among('ids')}", {"ids": raw.ids(erased)})
        left = [row[0] for row in gone if row[4] is not None]
        if left:  # left between fan-out and now: they get nothing more from us
            finish(session=session, ids=left, owner=owner, status=DeliveryStatus.cancelled, now=now,
                   error="subscriber no longer active")
    rows = [BatchRow(row[0], row[4], row[5], row[6], row[8]) for row in chosen if row[7] == active]
    return ClaimedBatch(segment_id=segment_id, rows=rows, resent=resent, position=(segment_id, ids[-1]))


def finish(
    *, session: Session, ids: Sequence[int], owner: str, status: DeliveryStatus, now: datetime,
    message_id: str | None = None, error: str | None = None,
) -> int:
    """Close leased deliveries: sent (with the provider's message id), failed or cancelled."""
    raw = _Raw(session)
    sent = ", message_id = :message_id, sent_at = :now" if status is DeliveryStatus.sent else ""
    statement = (f"UPDATE delivery SET status = :status, lease_owner = NULL, leased_until = NULL, error = :error{sent} "
                 f"WHERE id {raw.among('ids')} AND lease_owner = :owner")
    values = {"status": status.value, "error": error, "owner": owner, "ids": raw.ids(ids)}
    if sent:
        values.update(message_id=message_id, now=raw.time(now))
    return raw.run(statement, values)


# The claim's candidates, with the subscriber each goes to: one statement. FOR UPDATE OF d SKIP LOCKED on
# PostgreSQL locks the delivery rows only; subscribers are read, not locked. A LEFT JOIN: a delivery
# whose subscriber was erased is found too (s.id is NULL), and deleted.
_CANDIDATES_SQL = (
    "SELECT d.id, d.segment_id, d.status, d.lease_owner, s.id, s.email, s.name, s.status, s.link_tag "
    "FROM delivery d LEFT JOIN subscriber s ON s.id = d.subscriber_id "
    "WHERE d.issue_id = :issue_id AND {sendable} ORDER BY d.segment_id, d.id LIMIT :limit"
)
_SAME_SEGMENT = "d.status = 'pending' AND d.segment_id = :segment AND d.id > :last"
_LATER_SEGMENTS = "d.status = 'pending' AND d.segment_id > :segment"
_PENDING = "d.status = 'pending'"
_STALE = "d.status = 'sending' AND (d.leased_until < :now OR d.lease_owner = :owner"

# A lease in one statement. Rows taken over from another sender ('sending' under someone else's lease)
# may already have been handed to the provider: counted in ambiguous_resends. (":previous" is the owner
# again: PostgreSQL infers one type per parameter, varchar for the SET and text for the comparison.)
_LEASE_SQL = (
    "UPDATE delivery SET status = 'sending', lease_owner = :owner, leased_until = :until, "
    "attempts = attempts + 1, ambiguous_resends = ambiguous_resends + "
    "CASE WHEN status = 'sending' AND lease_owner <> :previous THEN 1 ELSE 0 END WHERE id {among}"
)


@functools.lru_cache(maxsize=16)
def _candidates_sql(dialect: str, sendable: str) -> str:
    sql = _CANDIDATES_SQL.format(sendable=sendable)
    return sql + " FOR UPDATE OF d SKIP LOCKED" if dialect == "postgresql" else sql


class _Raw:
    """The session's own DB-API connection (same transaction), for the per-batch statements.

    SQL is written with ``:name`` parameters (sqlite3's named style) and turned into ``%(name)s`` for
    psycopg. A list of values goes as ONE bound value — a JSON array on SQLite, an array on PostgreSQL —
    not as a thousand parameters; datetimes go through `UTCDateTime`, as they would through SQLAlchemy.
    """

    def __init__(self, session: Session | Connection):
        self._connection = session.connection() if isinstance(session, Session) else session
        self.dialect = self._connection.dialect.name
        self._time = _time_processor(self._connection.dialect)

    def among(self, name: str) -> str:
        if self.dialect == "postgresql":
            return f"= ANY(:{name})"
        return f"IN (SELECT value FROM json_each(:{name}))"

    def array(self, values: Sequence) -> object:
        values = list(values)
        return values if self.dialect == "postgresql" else json.dumps(values)

    def ids(self, values: Sequence[int]) -> str:
        """Row ids as one value: on PostgreSQL an array literal, which the statement types as integer[].
        (psycopg adapts a list element by element, with a regular expression per element: 2.5 ms for the
        two thousand ids of a batch's lease and record, against 0.1 ms for the join.)"""
        if self.dialect == "postgresql":
            return "{" + ",".join(map(str, map(int, values))) + "}"
        return json.dumps(list(map(int, values)))

    def time(self, value: datetime):
        return self._time(value)

    def fetch(self, sql: str, params: dict) -> list[tuple]:
        cursor = self._execute(sql, params)
        try:
            return cursor.fetchall()
        finally:
            cursor.close()

    def run_many(self, sql: str, rows: list[dict]) -> None:
        self._execute(sql, rows, many=True).close()

    def run(self, sql: str, params: dict) -> int:
        cursor = self._execute(sql, params)
        try:
            return cursor.rowcount
        finally:
            cursor.close()

    def _execute(self, sql: str, params, many: bool = False):
        cursor = self._connection.connection.cursor()
        try:
            (cursor.executemany if many else cursor.execute)(_paramstyle(sql, self.dialect), params)
        except Exception as exc:
            dialect = self._connection.dialect
            disconnected = isinstance(exc, dialect.loaded_dbapi.Error) and dialect.is_disconnect(
                exc, self._connection.connection.dbapi_connection, cursor)
            cursor.close()
            if disconnected:
                self._connection.invalidate(exc)  # as SQLAlchemy does: the pool forgets the dead connection
            # Wrapped as SQLAlchemy would: storage.db retries OperationalError (an outage), not the rest.
            raise DBAPIError.instance(sql, params, exc, dialect.loaded_dbapi.Error,
                                      connection_invalidated=disconnected, dialect=dialect) from exc
        return cursor


# -- opens (digest.tracking.record_opens): per pixel fetch, so on the DB-API cursor as well -----------------

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
    raw = _Raw(connection)
    rows = raw.fetch("SELECT d.id, d.subscriber_id, d.issue_id, d.sent_at, s.link_tag, s.accepts_untagged_links "
                     f"FROM delivery d JOIN subscriber s ON s.id = d.subscriber_id WHERE d.id {raw.among('ids')}",
                     {"ids": raw.ids(ids)})
    read_time = _time_reader(connection.dialect)
    return {row[0]: OpenTarget(row[1], row[2], read_time(row[3]), row[4], bool(row[5])) for row in rows}


def insert_events(*, connection: Connection, rows: list[dict]) -> None:
    """Insert Event rows (dicts of every column but id) in one executemany."""
    raw = _Raw(connection)
    raw.run_many(_INSERT_EVENT, [{**row, "occurred_at": raw.time(row["occurred_at"])} for row in rows])


_INSERT_EVENT = (
    "INSERT INTO event (kind, source, occurred_at, delivery_id, subscriber_id, issue_id, machine, provider_event_id, "
    "detail) VALUES (:kind, :source, :occurred_at, :delivery_id, :subscriber_id, :issue_id, :machine, "
    ":provider_event_id, :detail)"
)


@functools.lru_cache(maxsize=4)
def _time_reader(dialect):
    """What SQLAlchemy does to a UTCDateTime value read on ``dialect``: an aware UTC datetime."""
    column_type = UTCDateTime().dialect_impl(dialect)
    return column_type.result_processor(dialect, None) or (lambda value: column_type.process_result_value(value, dialect))


@functools.lru_cache(maxsize=64)
def _paramstyle(sql: str, dialect: str) -> str:
    return _NAMED.sub(r"%(\1)s", sql.replace("%", "%%")) if dialect == "postgresql" else sql


_NAMED = re.compile(r"(?<![:\w]):(\w+)")


@functools.lru_cache(maxsize=4)
def _time_processor(dialect):
    """What SQLAlchemy does to a UTCDateTime parameter on ``dialect`` (on SQLite: a fixed-format string)."""
    column_type = UTCDateTime().dialect_impl(dialect)
    return column_type.bind_processor(dialect) or (lambda value: column_type.process_bind_param(value, dialect))


def release(*, session: Session, ids: Sequence[int], owner: str, error: str) -> int:
    """Give leased deliveries back as pending (the provider is down): a later run sends them."""
    result = session.execute(
        update(Delivery).where(Delivery.id.in_(list(ids)), Delivery.lease_owner == owner)
        .values(status=DeliveryStatus.pending.value, lease_owner=None, leased_until=None, error=error)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


def extend_lease(*, session: Session, ids: Sequence[int], owner: str, lease_until: datetime, ambiguous: bool) -> None:
    """Before a retry: keep the lease, and count a possible duplicate when the last try was ambiguous."""
    values: dict = dict(leased_until=lease_until)
    if ambiguous:
        values["ambiguous_resends"] = Delivery.ambiguous_resends + 1
    session.execute(
        update(Delivery).where(Delivery.id.in_(list(ids)), Delivery.lease_owner == owner).values(**values)
        .execution_options(synchronize_session=False)
    )


def sending_owners(*, session: Session, issue_id: int) -> list[str]:
    rows = session.execute(
        select(Delivery.lease_owner).where(Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.sending.value)
        .distinct()
    )
    return [owner for (owner,) in rows if owner]


def status_counts(*, session: Session, issue_id: int) -> dict[str, int]:
    rows = session.execute(
        select(Delivery.status, func.count()).where(Delivery.issue_id == issue_id).group_by(Delivery.status)
    )
    return {str(status): count for status, count in rows}


def ambiguous_total(*, session: Session, issue_id: int) -> int:
    return session.execute(
        select(func.coalesce(func.sum(Delivery.ambiguous_resends), 0)).where(Delivery.issue_id == issue_id)
    ).scalar_one()



# -- the shared rate limit (digest.ratelimit) ------------------------------------------------------------

_BLOCK = text(
    "INSERT INTO send_throttle (id, blocked_until, reason) VALUES (1, :until, :reason) "
    "ON CONFLICT (id) DO UPDATE SET blocked_until = excluded.blocked_until, reason = excluded.reason "
    "WHERE send_throttle.blocked_until IS NULL OR send_throttle.blocked_until < excluded.blocked_until"
).bindparams(bindparam("until", type_=UTCDateTime()))


def block_sending(*, connection, until: datetime, reason: str) -> None:
    """No sender posts before ``until`` (a later time already recorded stands): one upserted row."""
    connection.execute(_BLOCK, {"until": until, "reason": reason})


def sending_blocked_until(*, connection) -> datetime | None:
    return connection.execute(select(SendThrottle.blocked_until).where(SendThrottle.id == 1)).scalar()
