"""Deliveries while an issue is sent: lease a batch, close it (sent, failed, cancelled), give it back, count.

The per-batch statements run on the DB-API cursor (`storage.raw.Raw`); the rest over the Session.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import NamedTuple

from sqlalchemy import func, select, update
from sqlmodel import Session

from storage.models import Delivery, DeliveryStatus, SubscriberStatus
from storage.raw import Raw


class BatchRow(NamedTuple):
    """What a claimed batch's rows begin with, in this order (they are the tuples the claim's SELECT returns, as
    they come: a million per send, so no object is made of each; index them, row[0] to row[4])."""

    delivery_id: int
    subscriber_id: int
    email: str
    name: str
    link_tag: int  # goes into the recipient's links (digest.links)


@dataclass(frozen=True)
class ClaimedBatch:
    segment_id: int
    rows: list[tuple]  # each begins as a BatchRow
    resent: int  # rows taken over from a sender whose outcome is unknown (counted as ambiguous)
    position: tuple[int, int] = (0, 0)  # (segment_id, id) of the last row leased: pass as ``after`` next time
    due_at: datetime | None = None  # when every row of the batch is due (DIGEST_DELIVERY=local); None: now


def claim_batch(
    *, session: Session, issue_id: int, owner: str, now: datetime, lease_until: datetime, limit: int,
    dead_owners: Sequence[str] = (), after: tuple[int, int] | None = None, horizon: datetime | None = None,
) -> ClaimedBatch | None:
    """Lease up to ``limit`` sendable deliveries of one segment (one content per request) and one due time.

    ``horizon``: only rows due by then (DIGEST_DELIVERY=local: the provider holds a send at most that far
    ahead); rows due later wait for a later claim. A batch's rows share one due time (one ``send_at`` per
    request); the fan-out inserted each segment's rows in due order, so they are neighbours.

    Sendable: pending, or 'sending' under a lease that ran out or belongs to a process known dead. Rows
    taken over from 'sending' may already have been handed to the provider, so they are counted in
    ``ambiguous_resends``. On PostgreSQL FOR UPDATE SKIP LOCKED lets several senders claim side by side;
    SQLite serialises writers (BEGIN IMMEDIATE, see storage.db).

    The statements run on the DB-API cursor (`Raw`): they run once per batch over a thousand rows, and
    SQLAlchemy's statement and row handling cost more than the statements did (benchmarks/send.py).
    """
    raw = Raw(session)
    params = _params(raw, issue_id=issue_id, owner=owner, now=now, limit=limit, horizon=horizon)
    candidates, stale = _candidates(raw, params, now=now, dead_owners=dead_owners, after=after)
    if not candidates:
        return None
    return _lease(session, raw, _one_kind(candidates), owner=owner, now=now, lease_until=lease_until, stale=stale)


def pick_after(*, session: Session, issue_id: int, owner: str, now: datetime, limit: int, after: tuple[int, int],
               horizon: datetime | None) -> list[tuple]:
    """What `claim_batch` from ``after`` would lease, read without leasing or locking it ([]: nothing left after
    the position): SQLite's sender reads its next batch while the one before is posted (digest.send.ahead), in a
    read transaction, which waits for no writer; `lease_picked` leases it later if no one took any of it since."""
    raw = Raw(session)
    params = _params(raw, issue_id=issue_id, owner=owner, now=now, limit=limit, horizon=horizon)
    candidates, _ = _candidates(raw, params, now=now, dead_owners=(), after=after)
    return _one_kind(candidates) if candidates else []


def _params(raw: Raw, *, issue_id: int, owner: str, now: datetime, limit: int, horizon: datetime | None) -> dict:
    """The claim's parameters, as `_candidates` binds them."""
    return {"issue_id": issue_id, "limit": limit, "owner": owner, "horizon": raw.time(horizon or _NO_HORIZON),
            "now": raw.time(now)}


def picked_batch(*, session: Session, picked: list[tuple]) -> ClaimedBatch:
    """The batch `lease_picked` will return for ``picked`` (nothing written): its request can be built before."""
    return _batch_of(Raw(session), picked, resent=0)


def lease_picked(*, session: Session, picked: list[tuple], owner: str, now: datetime,
                 lease_until: datetime) -> ClaimedBatch | None:
    """Lease what `pick_after` read, when every row of it is still pending (None when another sender took any:
    the caller claims afresh). Run in a write transaction, so nothing changes between the count and the lease."""
    raw = Raw(session)
    ids = raw.ids([row[0] for row in picked])
    (still,), = raw.fetch(f"SELECT count(*) FROM delivery WHERE id {raw.among('ids')} AND status = 'pending'",
                          {"ids": ids})
    if still != len(picked):
        return None
    return _lease(session, raw, picked, owner=owner, now=now, lease_until=lease_until, stale=False)


def end_idle_transaction_after(*, session: Session, seconds: float) -> None:
    """PostgreSQL: let the server end this session when its transaction sits idle longer than ``seconds``
    (idle_in_transaction_session_timeout, for this transaction only), rolling back what it did and releasing its
    locks. A sender leases its next batch ahead, uncommitted, while the one before is posted (digest.send.ahead):
    if it hangs or is cut off from the database meanwhile, those rows go back to pending after ``seconds``."""
    raw = Raw(session)
    if raw.dialect == "postgresql":
        raw.fetch("SELECT set_config('idle_in_transaction_session_timeout', :ms, true)",
                  {"ms": str(max(1, int(seconds * 1000)))})


def _one_kind(candidates: list[tuple]) -> list[tuple]:
    """The candidates of the first one's segment and due time (one content and one ``send_at`` per request)."""
    # d.id, d.subscriber_id, s.email, s.name, s.link_tag, s.status, d.segment_id, d.due_at, d.status, d.lease_owner
    first, last = candidates[0], candidates[-1]
    segment_id, due = first[6], first[7]
    if last[6] != segment_id or last[7] != due:  # the rows run into the next segment or due time: up to there
        return list(itertools.takewhile(lambda row: row[6] == segment_id and row[7] == due, candidates))
    return candidates


def _lease(session: Session, raw: Raw, chosen: list[tuple], *, owner: str, now: datetime, lease_until: datetime,
           stale: bool) -> ClaimedBatch:
    """Lease ``chosen`` (candidates of one kind); rows whose reader left or paused are closed, not sent."""
    ids = [row[0] for row in chosen]
    leased = DeliveryStatus.sending.value
    resent = sum(1 for row in chosen if row[8] == leased and row[9] != owner) if stale else 0
    raw.run(_LEASE_SQL.format(among=raw.among("ids")),
            {"owner": owner, "previous": owner, "until": raw.time(lease_until), "ids": raw.ids(ids)})
    batch = _batch_of(raw, chosen, resent=resent)
    if len(batch.rows) < len(chosen):
        _drop_gone(session, raw, [row for row in chosen if row[5] != _ACTIVE], owner=owner, now=now)
    return batch


def _batch_of(raw: Raw, chosen: list[tuple], *, resent: int) -> ClaimedBatch:
    segment_id, due = chosen[0][6], chosen[0][7]
    return ClaimedBatch(segment_id=segment_id, rows=_active(chosen), resent=resent,
                        position=(segment_id, chosen[-1][0]), due_at=raw.read_time(due) if due is not None else None)


_ACTIVE = SubscriberStatus.active.value  # looked up once: an enum .value costs a call per row


def _active(chosen: list[tuple]) -> list[tuple]:
    return chosen if all(row[5] == _ACTIVE for row in chosen) else [row for row in chosen if row[5] == _ACTIVE]


def _candidates(raw: Raw, params: dict, *, now: datetime, dead_owners: Sequence[str],
                after: tuple[int, int] | None) -> tuple[list[tuple], bool]:
    """The next rows a claim may lease, in index order, with their subscribers; and whether they are stale
    leases (taken over: then some may have been handed to the provider already).

    Each query walks the issue's rows in the (issue_id, segment_id, id) index, in order, and stops at
    ``limit``; status is a filter, not part of the index, so that leasing and closing a row never touch
    an index (see Delivery).
    ``after``: where this sender's last batch ended. Every row before it is sent or leased, so a claim
    from the start would step over all of them: a million rows half-way through a million. Starting
    after our last batch skips them; a row left behind (a batch given back, a row another sender
    skipped) is found by the scan from the start that follows when nothing is left after the position.
    The same holds for the 'sending' rows, so stale leases are looked for when a send starts and when
    nothing is left after the position, not before every batch: the caller asks again without ``after``.
    From the start, pending and stale rows are looked for in one walk, in index order (a send that starts
    finds its first batch at once; one that ends walks the issue once, not once for each).
    """
    if after is not None:  # only pending rows after the position: a caller resuming a send
        # Two queries, not "(segment_id, id) > (:segment, :last)": SQLite bounds an index range by the
        # first column of a row value only, so that one read the whole segment up to the position again
        # for every batch (11 ms a claim at 200,000 recipients, growing with the list).
        segment, last = after
        return raw.fetch(_candidates_sql(raw.dialect, _SAME_SEGMENT), {**params, "segment": segment, "last": last}) \
            or raw.fetch(_candidates_sql(raw.dialect, _LATER_SEGMENTS), {**params, "segment": segment}), False
    # Stale: a lease that ran out, or belongs to a process known dead, or is ``owner``'s own, still
    # open: a claim whose commit succeeded but whose answer was lost (the database went away at that
    # moment) and was then retried. Those rows never left, so they are not counted as ambiguous. The
    # sender records its last batch in the same transaction, before this (Sender._claim).
    sendable = f"({_PENDING} OR ({_STALE}" + (f" OR d.lease_owner {raw.among('dead')})))" if dead_owners else ")))")
    return raw.fetch(_candidates_sql(raw.dialect, sendable), {**params, "dead": raw.array(dead_owners)}), True


def _drop_gone(session: Session, raw: Raw, gone: list[tuple], *, owner: str, now: datetime) -> None:
    """Claimed rows whose subscriber is no longer active, or paused: they are not sent."""
    erased = [row[0] for row in gone if row[2] is None]
    if erased:  # no subscriber row (the LEFT JOIN read NULLs): written by a fan-out while an erase ran (see
        # Delivery), and erasing meant deleting them
        raw.run(f"DELETE FROM delivery WHERE id {raw.among('ids')}", {"ids": raw.ids(erased)})
    for paused, error in ((False, "subscriber no longer active"), (True, "subscriber paused")):
        left = [row[0] for row in gone if row[2] is not None and (row[5] == PAUSED) is paused]
        if left:  # left, or paused, between fan-out and now: not sent this issue
            finish(session=session, ids=left, owner=owner, status=DeliveryStatus.cancelled, now=now, error=error)


def finish(
    *, session: Session, ids: Sequence[int], owner: str, status: DeliveryStatus, now: datetime,
    message_id: str | None = None, error: str | None = None,
) -> int:
    """Close leased deliveries: sent (with the provider's message id), failed or cancelled."""
    raw = Raw(session)
    sent = ", message_id = :message_id, sent_at = :now" if status is DeliveryStatus.sent else ""
    statement = (f"UPDATE delivery SET status = :status, lease_owner = NULL, leased_until = NULL, error = :error{sent} "
                 f"WHERE id {raw.among('ids')} AND lease_owner = :owner")
    values = {"status": status.value, "error": error, "owner": owner, "ids": raw.ids(ids)}
    if sent:
        values.update(message_id=message_id, now=raw.time(now))
    return raw.run(statement, values)


# The claim's candidates, with the subscriber each goes to: one statement. FOR UPDATE OF d SKIP LOCKED on
# PostgreSQL locks the delivery rows only; subscribers are read, not locked. A LEFT JOIN: a delivery whose
# subscriber was erased is found too (s.email is NULL), and deleted. An active reader who paused since the
# fan-out, until after the email is due, reads as PAUSED instead of their status, and is not sent this issue.
PAUSED = "paused"  # not a SubscriberStatus: what the claim reads for an active reader paused at the email's time
_CANDIDATES_SQL = (
    "SELECT d.id, d.subscriber_id, s.email, s.name, s.link_tag, "
    f"CASE WHEN s.status = 'active' AND s.paused_until > COALESCE(d.due_at, :now) THEN '{PAUSED}' ELSE s.status END, "
    "d.segment_id, d.due_at, d.status, d.lease_owner "
    "FROM delivery d LEFT JOIN subscriber s ON s.id = d.subscriber_id "
    "WHERE d.issue_id = :issue_id AND {sendable} AND (d.due_at IS NULL OR d.due_at <= :horizon) "
    "ORDER BY d.segment_id, d.id LIMIT :limit"
)
# No horizon: every row is claimable (a time no due time reaches, as the column stores it).
_NO_HORIZON = datetime(9999, 1, 1, tzinfo=timezone.utc)


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


def release(*, session: Session, ids: Sequence[int], owner: str, error: str) -> int:
    """Give leased deliveries back as pending (the provider is down): a later run sends them."""
    result = session.execute(
        update(Delivery).where(Delivery.id.in_(list(ids)), Delivery.lease_owner == owner)
        .values(status=DeliveryStatus.pending.value, lease_owner=None, leased_until=None, error=error)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


def extend_lease(*, session: Session, ids: Sequence[int], owner: str, lease_until: datetime, ambiguous: bool) -> int:
    """Before a retry: keep the lease, and count a possible duplicate when the last try was ambiguous. How many of
    ``ids`` are still ``owner``'s: fewer than all when another sender took them over (the lease ran out while this
    one could not reach the database), and then those must not be posted again."""
    values: dict = dict(leased_until=lease_until)
    if ambiguous:
        values["ambiguous_resends"] = Delivery.ambiguous_resends + 1
    return session.execute(
        update(Delivery).where(Delivery.id.in_(list(ids)), Delivery.lease_owner == owner,
                               Delivery.status == DeliveryStatus.sending.value).values(**values)
        .execution_options(synchronize_session=False)
    ).rowcount


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

