"""Who an issue reaches, as the editor's desk asks (issue 15: the desk's SQL lives here): a reader's
delivery of an issue, the addresses the preview can be shown as, who gets nothing from an
issue and why, whether the issue already went out, and what changed since the desk last looked.

Keyword-only functions over a Session, read-only, like storage.issues.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, or_, select
from sqlmodel import Session

from storage.models import Cadence, Delivery, DeliveryStatus, Issue, Subscriber, SubscriberStatus

# The reasons, in the order the list shows them: first the people an editor can still do something
# about (they follow nothing this issue covers, or never confirmed), then those who chose another email
# (the monthly one, issue 19) or a break, then the silent readers the sunset stopped
# (digest.subscribers.sunset: any old link of theirs offers to resume), then those who chose to leave.
NO_MATCH = "no matching category"
PENDING = "pending confirmation"
MONTHLY = "reads the monthly email"
PAUSED = "paused"
DORMANT = "dormant"
REASONS = (NO_MATCH, PENDING, MONTHLY, PAUSED, DORMANT, "unsubscribed", "bounced", "complained")


@dataclass(frozen=True)
class LeftOut:
    email: str
    reason: str  # one of REASONS
    paused_until: datetime | None = None


def _where(reason: str, *, now: datetime, reached: Sequence[str]):
    active = Subscriber.status == SubscriberStatus.active.value
    unpaused = or_(Subscriber.paused_until.is_(None), Subscriber.paused_until <= now)
    if reason == NO_MATCH:
        weekly = Subscriber.cadence == Cadence.weekly.value
        return active & unpaused & weekly & Subscriber.categories.not_in(list(reached))
    if reason == MONTHLY:
        return active & unpaused & (Subscriber.cadence == Cadence.monthly.value)
    if reason == PAUSED:
        return active & (Subscriber.paused_until > now)
    if reason == PENDING:
        return Subscriber.status == SubscriberStatus.pending.value
    return Subscriber.status == reason


def left_out(*, session: Session, now: datetime, reached: Sequence[str] | None,
             limit: int | None) -> tuple[dict[str, int], list[LeftOut]]:
    """Subscribers an issue reaching the category sets ``reached`` would skip: counts by reason (every
    reason with someone in it), and the first ``limit`` people (all with None) in REASONS order, then by
    address. ``reached`` None: the issue has nothing to send, and "no matching category" is not asked."""
    counts: dict[str, int] = {}
    people: list[LeftOut] = []
    for reason in REASONS:
        if reason == NO_MATCH and reached is None:
            continue
        where = _where(reason, now=now, reached=reached or ())
        count = session.execute(select(func.count()).select_from(Subscriber).where(where)).scalar_one()
        if not count:
            continue
        counts[reason] = count
        room = None if limit is None else limit - len(people)
        if room is None or room > 0:
            query = select(Subscriber.email, Subscriber.paused_until).where(where).order_by(Subscriber.email_key)
            rows = session.execute(query if room is None else query.limit(room))
            people.extend(LeftOut(email=email, reason=reason, paused_until=until) for email, until in rows)
    return counts, people


@dataclass(frozen=True)
class SentIssue:
    """An issue that has gone out, in part or in full: a dry run has nothing to show for it."""

    week: str
    first_sent_at: datetime | None  # None: closed with nobody to send to
    closed_at: datetime | None  # completed_at
    readers: int  # deliveries sent
    to_send: int  # deliveries still pending or in flight


def sent_issue(*, session: Session, issue) -> SentIssue | None:
    """``issue`` as sent, or None while nothing of it has gone out and it is not closed."""
    rows = session.execute(
        select(Delivery.status, func.count(), func.min(Delivery.sent_at)).where(Delivery.issue_id == issue.id)
        .group_by(Delivery.status)).all()
    by_status = {str(getattr(status, "value", status)): (count, first) for status, count, first in rows}
    readers, first_sent_at = by_status.get(DeliveryStatus.sent.value, (0, None))
    if not readers and issue.completed_at is None:
        return None
    to_send = sum(by_status.get(status.value, (0, None))[0] for status in (DeliveryStatus.pending, DeliveryStatus.sending))
    return SentIssue(week=issue.week, first_sent_at=first_sent_at, closed_at=issue.completed_at, readers=readers,
                     to_send=to_send)


def delivery_id_for(*, session: Session, issue_id: int, subscriber_id: int) -> int | None:
    """The id of ``subscriber_id``'s delivery of the issue, or None when the issue was not fanned out to them."""
    query = select(Delivery.id).where(Delivery.issue_id == issue_id, Delivery.subscriber_id == subscriber_id)
    return session.execute(query).scalars().first()


def active_addresses(*, session: Session, limit: int) -> list[str]:
    """The first ``limit`` active subscribers' addresses, in order."""
    query = select(Subscriber.email).where(Subscriber.status == "active").order_by(Subscriber.email).limit(limit)
    return list(session.execute(query).scalars().all())


def subscribers_mark(*, session: Session) -> tuple:
    """(latest update, count) of the subscribers: changes whenever one is added, changed or removed."""
    return tuple(session.execute(select(func.max(Subscriber.updated_at), func.count(Subscriber.id))).one())


def issues_mark(*, session: Session) -> tuple:
    """(count,) of the issues: changes when one is opened."""
    return tuple(session.execute(select(func.count(Issue.id))).one())
