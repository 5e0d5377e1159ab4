"""Changes to a subscriber's standing, each recorded as an event. Shared by the web pages and the webhook.

Suppression is one-way: a bounced or complained address is never sent to again, and nothing here turns
it back to active; only an unsubscribed (or pending) person can come back, by their own action.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from storage.models import Event, Subscriber, SubscriberStatus

SUPPRESSED = frozenset({SubscriberStatus.bounced, SubscriberStatus.complained})


def record_event(
    *, session: Session, kind: str, source: str, now: datetime, subscriber_id: int | None = None,
    delivery_id: int | None = None, issue_id: int | None = None, machine: bool = False,
    provider_event_id: str | None = None, detail: str = "",
) -> Event:
    event = Event(kind=kind, source=source, occurred_at=now, subscriber_id=subscriber_id, delivery_id=delivery_id,
                  issue_id=issue_id, machine=machine, provider_event_id=provider_event_id, detail=detail[:2000])
    session.add(event)
    return event


def unsubscribe(*, session: Session, subscriber: Subscriber, source: str, now: datetime,
                delivery_id: int | None = None, issue_id: int | None = None) -> bool:
    """Unsubscribe at once; True if this changed anything (a second call is a no-op, not an error)."""
    if subscriber.status in SUPPRESSED or subscriber.status == SubscriberStatus.unsubscribed:
        return False
    subscriber.status = SubscriberStatus.unsubscribed
    subscriber.unsubscribed_at = now
    subscriber.updated_at = now
    record_event(session=session, kind="unsubscribe", source=source, now=now, subscriber_id=subscriber.id,
                 delivery_id=delivery_id, issue_id=issue_id)
    return True


def resubscribe(*, session: Session, subscriber: Subscriber, source: str, now: datetime) -> bool:
    """Come back after unsubscribing. Never lifts a bounce or a complaint: those addresses stay suppressed."""
    if subscriber.status != SubscriberStatus.unsubscribed:
        return False
    subscriber.status = SubscriberStatus.active
    subscriber.unsubscribed_at = None
    subscriber.paused_until = None
    subscriber.updated_at = now
    record_event(session=session, kind="resubscribe", source=source, now=now, subscriber_id=subscriber.id)
    return True


def suppress(*, session: Session, subscriber: Subscriber, status: SubscriberStatus, source: str, now: datetime,
             delivery_id: int | None = None, issue_id: int | None = None, detail: str = "") -> bool:
    """Mark an address bounced or complained (from the provider): never sent to again."""
    assert status in SUPPRESSED
    if subscriber.status == status:
        return False
    if subscriber.status == SubscriberStatus.complained:
        return False  # a complaint outranks a later bounce
    subscriber.status = status
    subscriber.updated_at = now
    return True
