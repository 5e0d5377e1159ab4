"""The SQL of the weekly run, in one place. Keyword-only functions over a Session.

Each function runs inside the caller's transaction; the caller decides what commits together.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, func, or_, select, text, tuple_, update
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
    claimed = select(IssueComparison.comparison_id).where(IssueComparison.comparison_id == Comparison.id)
    return (Comparison.published_at <= now) & ~claimed.exists()


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
            "WHERE c.published_at <= :now AND NOT EXISTS "
            "(SELECT 1 FROM issue_comparison ic WHERE ic.comparison_id = c.id) "
            "ON CONFLICT (comparison_id) DO NOTHING"
        ).bindparams(bindparam("now", type_=UTCDateTime())),
        {"issue_id": issue_id, "now": now},
    )
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


def inactive_counts(*, session: Session, now: datetime) -> dict[str, int]:
    """Subscribers who get nothing whatever the content, by reason (for the dry run)."""
    rows = session.execute(
        select(Subscriber.status, func.count()).where(Subscriber.status != SubscriberStatus.active.value)
        .group_by(Subscriber.status)
    )
    counts = {str(status): count for status, count in rows}
    paused = session.execute(
        select(func.count()).where(Subscriber.status == SubscriberStatus.active.value, Subscriber.paused_until > now)
    ).scalar_one()
    if paused:
        counts["paused"] = paused
    return counts


def fan_out(*, session: Session, issue_id: int, segment_id: int, category_sets: Sequence[str], now: datetime) -> int:
    """One pending delivery per active subscriber following one of ``category_sets``.

    INSERT … SELECT in the database: the audience of a million subscribers never passes through Python.
    ON CONFLICT DO NOTHING on (issue, subscriber) makes a second fan-out a no-op.
    """
    statement = text(
        "INSERT INTO delivery (issue_id, subscriber_id, segment_id, status, attempts, ambiguous_resends, created_at) "
        "SELECT :issue_id, s.id, :segment_id, 'pending', 0, 0, :now FROM subscriber s "
        "WHERE s.status = 'active' AND (s.paused_until IS NULL OR s.paused_until <= :now) "
        "AND s.categories IN :category_sets "
        "ON CONFLICT (issue_id, subscriber_id) DO NOTHING"
    ).bindparams(bindparam("category_sets", expanding=True), bindparam("now", type_=UTCDateTime()))
    result = session.execute(
        statement,
        {"issue_id": issue_id, "segment_id": segment_id, "now": now, "category_sets": list(category_sets)},
    )
    return result.rowcount


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


@dataclass(frozen=True)
class BatchRow:
    delivery_id: int
    subscriber_id: int
    email: str
    name: str


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
    """
    sending = Delivery.status == DeliveryStatus.sending.value
    # Our own lease, still open: a claim whose commit succeeded but whose answer was lost (the database
    # went away at that moment) and was then retried. We never posted those rows, so no ambiguity.
    ours = Delivery.lease_owner == owner
    takeable = (Delivery.leased_until < now) | ours
    if dead_owners:
        takeable = takeable | Delivery.lease_owner.in_(list(dead_owners))
    stale = sending & takeable  # "status = 'sending'" outside the OR, or SQLite leaves the index

    def first(sendable):
        return session.execute(
            select(Delivery.id, Delivery.segment_id, Delivery.status, Delivery.lease_owner)
            .where(Delivery.issue_id == issue_id, sendable)
            .order_by(Delivery.segment_id, Delivery.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).all()

    # Two queries, not one with "pending OR stale": each walks the (issue_id, status, segment_id, id) index
    # in order and stops at ``limit``. With the OR, SQLite sorted every delivery of the issue for every
    # batch: 30 ms a batch at 50,000 recipients, growing with the list. Stale rows first: they are older.
    # ``after``: where this sender's last batch ended. On PostgreSQL every row already sent leaves a dead
    # entry at the front of the index until VACUUM, so a claim from the start rescans them all: 0.3 s a
    # batch half-way through a million. Starting after our last batch skips them; a row left behind (a
    # batch given back, a row another sender skipped) is found by the scan from the start that follows
    # when nothing is left after the position.
    # The same holds for the 'sending' rows, so stale leases are looked for when a send starts and when
    # nothing is left after the position, not before every batch.
    pending = Delivery.status == DeliveryStatus.pending.value
    candidates = []
    if after is not None:
        candidates = first(pending & (tuple_(Delivery.segment_id, Delivery.id) > tuple_(*after)))
    if not candidates:
        candidates = first(stale) or first(pending)
    if not candidates:
        return None
    segment_id = candidates[0].segment_id
    chosen = [row for row in candidates if row.segment_id == segment_id]
    ids = [row.id for row in chosen]
    leased = DeliveryStatus.sending.value
    resent = sum(1 for row in chosen if row.status == leased and row.lease_owner != owner)
    among, ids_param = _among_ids(session, ids)
    session.execute(text(_LEASE_SQL.format(among=among)).bindparams(bindparam("until", type_=UTCDateTime())),
                    {"owner": owner, "previous": owner, "until": lease_until, "ids": ids_param})
    people = session.execute(text(_PEOPLE_SQL.format(among=among)), {"ids": ids_param}).all()
    active = SubscriberStatus.active.value  # looked up once: an enum .value costs a call per row
    gone = [row[0] for row in people if row[4] != active]
    if gone:  # left between fan-out and now: they get nothing more from us
        finish(session=session, ids=gone, owner=owner, status=DeliveryStatus.cancelled, now=now,
               error="subscriber no longer active")
    rows = [BatchRow(r[0], r[1], r[2], r[3]) for r in people if r[4] == active]
    return ClaimedBatch(segment_id=segment_id, rows=rows, resent=resent, position=(segment_id, ids[-1]))


def finish(
    *, session: Session, ids: Sequence[int], owner: str, status: DeliveryStatus, now: datetime,
    message_id: str | None = None, error: str | None = None,
) -> int:
    """Close leased deliveries: sent (with the provider's message id), failed or cancelled."""
    among, ids_param = _among_ids(session, ids)
    sent = ", message_id = :message_id, sent_at = :now" if status is DeliveryStatus.sent else ""
    statement = text(
        f"UPDATE delivery SET status = :status, lease_owner = NULL, leased_until = NULL, error = :error{sent} "
        f"WHERE id {among} AND lease_owner = :owner"
    )
    values = {"status": status.value, "error": error, "owner": owner, "ids": ids_param}
    if sent:
        statement = statement.bindparams(bindparam("now", type_=UTCDateTime()))
        values.update(message_id=message_id, now=now)
    return session.execute(statement, values).rowcount


# A lease in one statement. Rows taken over from another sender ('sending' under someone else's lease)
# may already have been handed to the provider: counted in ambiguous_resends. (":previous" is the owner
# again: PostgreSQL infers one type per parameter, varchar for the SET and text for the comparison.)
_LEASE_SQL = (
    "UPDATE delivery SET status = 'sending', lease_owner = :owner, leased_until = :until, "
    "attempts = attempts + 1, ambiguous_resends = ambiguous_resends + "
    "CASE WHEN status = 'sending' AND lease_owner <> :previous THEN 1 ELSE 0 END WHERE id {among}"
)
_PEOPLE_SQL = (
    "SELECT d.id, s.id, s.email, s.name, s.status FROM delivery d JOIN subscriber s ON s.id = d.subscriber_id "
    "WHERE d.id {among} ORDER BY d.id"
)


def _among_ids(session: Session, ids: Sequence[int]) -> tuple[str, object]:
    """``id IN ids`` with the ids as ONE bound value: a JSON array on SQLite, an array on PostgreSQL.

    A 1000-element IN list made SQLAlchemy build and bind 1000 parameters per statement, three statements
    per batch: more time than the statements themselves (measured in benchmarks/send.py).
    """
    ids = [int(i) for i in ids]
    if session.get_bind().dialect.name == "postgresql":
        return "= ANY(:ids)", ids
    return "IN (SELECT value FROM json_each(:ids))", json.dumps(ids)


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
