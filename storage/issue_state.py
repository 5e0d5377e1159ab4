"""An issue's standing (issue 18): paused (by hand or by the guardrail, with the reason), resumed, or
cancelled. Senders read it before every batch (`halted`), so a pause takes effect within one batch on every
sender and worker; nothing here ever resumes an issue by itself."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, update
from sqlmodel import Session

from storage.models import Delivery, DeliveryStatus, Issue
from storage.raw import Raw


def halted(*, session: Session, issue_id: int) -> str | None:
    """Why the issue must not send now ("paused: …", "cancelled"), or None when it may."""
    # Asked before every batch: on the driver's cursor (storage.raw), not through the ORM's statement handling.
    (paused_at, reason, cancelled_at), = Raw(session).fetch(
        "SELECT paused_at, pause_reason, cancelled_at FROM issue WHERE id = :id", {"id": issue_id})
    if cancelled_at is not None:
        return "cancelled"
    if paused_at is not None:
        return f"paused: {reason or 'by hand'}"
    return None


def pause_issue(*, session: Session, issue_id: int, reason: str, now: datetime) -> bool:
    """Pause the issue unless it is paused, cancelled or finished already; whether this call paused it (the
    first reason stands: a guardrail tripping twice, or two senders seeing it at once, pause it once)."""
    result = session.execute(update(Issue).where(Issue.id == issue_id, Issue.paused_at.is_(None),
                                                 Issue.cancelled_at.is_(None), Issue.completed_at.is_(None))
                             .values(paused_at=now, pause_reason=reason[:500]))
    return result.rowcount == 1


def resume_issue(*, session: Session, issue_id: int, now: datetime) -> bool:
    """Lift a pause; whether there was one. The reason is kept in the log, not here.

    The guardrail's running totals start again from zero: it judges what happened after the resume (once
    DIGEST_GUARDRAIL_MIN_EVENTS more outcomes are known), not the figures that paused the issue, which would
    pause it again at the next webhook post whatever the operator fixed. By when the events happened, not
    when they arrive (``judged_since``): a webhook running behind still brings events from before ``now``."""
    result = session.execute(update(Issue).where(Issue.id == issue_id, Issue.paused_at.is_not(None),
                                                 Issue.cancelled_at.is_(None))
                             .values(paused_at=None, pause_reason=None, reported_delivered=0, reported_bounced=0,
                                     reported_dropped=0, reported_complaints=0, judged_since=now))
    return result.rowcount == 1


def cancel_issue(*, session: Session, issue_id: int, now: datetime) -> int | None:
    """Cancel the issue: its pending deliveries become cancelled (what is sent or being sent stays as it is),
    and it is finished. How many were cancelled; None when it was cancelled already."""
    # FOR NO KEY UPDATE (key_share) on PostgreSQL: the webhook's event inserts hold a KEY SHARE lock on the
    # issue row (their foreign key) while they add to its totals; a full FOR UPDATE here could deadlock with them.
    issue = session.get(Issue, issue_id, with_for_update={"key_share": True})
    if issue.cancelled_at is not None:
        return None
    cancelled = session.execute(update(Delivery).where(Delivery.issue_id == issue_id,
                                                       Delivery.status == DeliveryStatus.pending.value)
                                .values(status=DeliveryStatus.cancelled.value, error="issue cancelled")).rowcount
    issue.cancelled_at = now
    if issue.completed_at is None and not _leased(session, issue_id):
        issue.completed_at = now
    return cancelled


def _leased(session: Session, issue_id: int) -> int:
    return session.execute(select(func.count()).select_from(Delivery).where(
        Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.sending.value)).scalar_one()


# -- what the provider holds until each reader's hour (DIGEST_DELIVERY=local, issue 19) ---------------------

def provider_batch_id(*, session: Session, issue_id: int, new: str | None = None) -> str | None:
    """The provider's batch id holding the issue's scheduled sends; with ``new``, recorded first unless the
    issue has one (two senders asking at once keep the first, and both use it)."""
    if new is not None:
        session.execute(update(Issue).where(Issue.id == issue_id, Issue.provider_batch_id.is_(None))
                        .values(provider_batch_id=new))
    return session.execute(select(Issue.provider_batch_id).where(Issue.id == issue_id)).scalar_one()


def cancel_held(*, session: Session, issue_id: int, after: datetime) -> int:
    """Deliveries handed to the provider to hold until after ``after``, which it has agreed to drop: cancelled,
    not sent. How many."""
    return session.execute(update(Delivery).where(Delivery.issue_id == issue_id,
                                                  Delivery.status == DeliveryStatus.sent.value,
                                                  Delivery.due_at > after)
                           .values(status=DeliveryStatus.cancelled.value,
                                   error="issue cancelled: the provider dropped it before its send time")).rowcount


def held(*, session: Session, issue_id: int, now: datetime) -> tuple[int, datetime | None]:
    """Deliveries handed to the provider that it holds still (due after ``now``), and the last due time."""
    row = session.execute(select(func.count(), func.max(Delivery.due_at)).where(
        Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.sent.value, Delivery.due_at > now)).one()
    return row[0], row[1]


def waiting(*, session: Session, issue_id: int, horizon: datetime) -> tuple[int, datetime | None]:
    """Pending deliveries due after ``horizon`` (beyond what the provider may hold yet), and the first due time."""
    row = session.execute(select(func.count(), func.min(Delivery.due_at)).where(
        Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.pending.value,
        Delivery.due_at > horizon)).one()
    return row[0], row[1]


def set_provider_hold(*, session: Session, issue_id: int, status: str | None) -> None:
    """Record what the provider was told to do with what it holds of the issue ("pause", "cancel", None)."""
    session.execute(update(Issue).where(Issue.id == issue_id).values(provider_hold=status))
