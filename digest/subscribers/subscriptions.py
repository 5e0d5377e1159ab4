"""Changes to a subscriber's standing, each recorded as an event. Shared by the web pages and the webhook.

Suppression is one-way: a bounced or complained address is never sent to again, and nothing here turns
it back to active; only an unsubscribed (or pending) person can come back, by their own action. A person
who asks to be forgotten leaves only a `Suppression` row: the SHA-256 of their lower-cased address, so
that an import or a signup can refuse the address without the store keeping it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlalchemy import delete, or_, select
from sqlmodel import Session

from storage.models import Delivery, Event, Issue, Subscriber, SubscriberStatus, Suppression

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
                delivery_id: int | None = None, issue_id: int | None = None, detail: str = "") -> bool:
    """Unsubscribe at once; True if this changed anything (a second call is a no-op, not an error)."""
    if subscriber.status in SUPPRESSED or subscriber.status == SubscriberStatus.unsubscribed:
        return False
    subscriber.status = SubscriberStatus.unsubscribed
    subscriber.unsubscribed_at = now
    subscriber.updated_at = now
    record_event(session=session, kind="unsubscribe", source=source, now=now, subscriber_id=subscriber.id,
                 delivery_id=delivery_id, issue_id=issue_id, detail=detail)
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


# -- preferences ---------------------------------------------------------------------------------------

PAUSE_WEEKS = (1, 2, 4, 8)


def set_categories(*, session: Session, subscriber: Subscriber, categories: str, now: datetime) -> bool:
    """Store the canonical categories string (see selection.canonical_categories); True if it changed."""
    if subscriber.categories == categories:
        return False
    subscriber.categories = categories
    subscriber.updated_at = now
    return True


def pause(*, session: Session, subscriber: Subscriber, weeks: int, now: datetime) -> datetime:
    """No issue for ``weeks`` weeks from now (the fan-out skips paused subscribers); returns the end."""
    if weeks not in PAUSE_WEEKS:
        raise ValueError(f"a pause is {', '.join(map(str, PAUSE_WEEKS))} weeks long, not {weeks}")
    subscriber.paused_until = now + timedelta(weeks=weeks)
    subscriber.updated_at = now
    return subscriber.paused_until


def resume(*, session: Session, subscriber: Subscriber, now: datetime) -> bool:
    if subscriber.paused_until is None:
        return False
    subscriber.paused_until = None
    subscriber.updated_at = now
    return True


# -- suppression and erasure -----------------------------------------------------------------------------

def email_hash(email_key: str) -> str:
    """Hex SHA-256 of the lower-cased address: what a Suppression row keeps instead of the address."""
    return hashlib.sha256(email_key.strip().lower().encode("utf-8")).hexdigest()


def suppressed_keys(connection, keys: Iterable[str]) -> set[str]:
    """The addresses (email_keys) among ``keys`` that asked to be forgotten. Takes a Connection or Session."""
    by_hash = {email_hash(key): key for key in keys}
    if not by_hash:
        return set()
    found = connection.execute(select(Suppression.email_hash).where(Suppression.email_hash.in_(list(by_hash))))
    return {by_hash[row[0]] for row in found}


def is_suppressed(session: Session, email_key: str) -> bool:
    """True when nothing may be sent to this address, not even a confirmation email.

    That is an address that asked to be forgotten (a Suppression row), or a known subscriber whose
    mail bounced or who reported it as spam.
    """
    if suppressed_keys(session, [email_key]):
        return True
    status = session.execute(
        select(Subscriber.status).where(Subscriber.email_key == email_key.strip().lower())).scalar_one_or_none()
    return status in {s.value for s in SUPPRESSED}


def forget(*, session: Session, subscriber: Subscriber, now: datetime) -> Suppression:
    """Delete the subscriber, their deliveries and their events; keep only the address's hash.

    The reason kept is "deleted", or the bounce or complaint that already suppressed the address.
    """
    reason = subscriber.status if subscriber.status in SUPPRESSED else "deleted"
    reason = getattr(reason, "value", reason)
    digest = email_hash(subscriber.email_key)
    deliveries = select(Delivery.id).where(Delivery.subscriber_id == subscriber.id)
    session.flush()
    session.execute(delete(Event).where(or_(Event.subscriber_id == subscriber.id, Event.delivery_id.in_(deliveries))))
    session.execute(delete(Delivery).where(Delivery.subscriber_id == subscriber.id))
    session.delete(subscriber)
    suppression = session.execute(select(Suppression).where(Suppression.email_hash == digest)).scalar_one_or_none()
    if suppression is None:
        suppression = Suppression(email_hash=digest, reason=reason, created_at=now)
        session.add(suppression)
    session.flush()
    return suppression


def export_data(*, session: Session, subscriber: Subscriber) -> dict:
    """Everything the store holds about one subscriber, as plain JSON-ready data."""
    deliveries = session.execute(
        select(Delivery, Issue.week).join(Issue, Issue.id == Delivery.issue_id)
        .where(Delivery.subscriber_id == subscriber.id).order_by(Delivery.id)).all()
    delivery_ids = [delivery.id for delivery, _ in deliveries]
    events = session.execute(
        select(Event).where(or_(Event.subscriber_id == subscriber.id, Event.delivery_id.in_(delivery_ids)))
        .order_by(Event.occurred_at, Event.id)).scalars().all()
    return {
        "subscriber": {
            "email": subscriber.email,
            "name": subscriber.name,
            "status": getattr(subscriber.status, "value", subscriber.status),
            "categories": [part for part in subscriber.categories.split(";") if part],
            "categories_note": "an empty list means every category",
            "paused_until": _iso(subscriber.paused_until),
            "created_at": _iso(subscriber.created_at),
            "updated_at": _iso(subscriber.updated_at),
            "confirmed_at": _iso(subscriber.confirmed_at),
            "unsubscribed_at": _iso(subscriber.unsubscribed_at),
        },
        "deliveries": [
            {"issue": week, "status": getattr(d.status, "value", d.status), "created_at": _iso(d.created_at),
             "sent_at": _iso(d.sent_at)}
            for d, week in deliveries
        ],
        "events": [
            {"kind": e.kind, "occurred_at": _iso(e.occurred_at), "source": e.source, "machine": e.machine,
             "detail": e.detail}
            for e in events
        ],
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
