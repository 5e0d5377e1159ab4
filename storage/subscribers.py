"""Subscriber rows: lookups by id and address, changes to a row, the events a subscriber's actions record,
suppressions (what is kept of an address that asked to be forgotten) and the reads an export needs.

The rules (who may come back, what a bounce means) are the domain's: digest.subscribers.subscriptions and
digest.subscribers.confirmation decide, and ask for the writes here.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import Connection, delete, func, or_, select, text
from sqlmodel import Session

from storage.events import event_row
from storage.models import Delivery, Event, Issue, Subscriber, SubscriberStatus, Suppression


# -- lookups ---------------------------------------------------------------------------------------------------

def find_subscriber(*, session: Session, subscriber_id: int) -> Subscriber | None:
    return session.get(Subscriber, subscriber_id)


def find_by_email_key(*, session: Session, email_key: str) -> Subscriber | None:
    return session.execute(select(Subscriber).where(Subscriber.email_key == email_key)).scalars().first()


def status_by_email_key(*, session: Session, email_key: str) -> str | None:
    """The status stored for this address, or None for an address nobody has."""
    return session.execute(
        select(Subscriber.status).where(Subscriber.email_key == email_key)).scalar_one_or_none()


def delivery_of(*, session: Session, subscriber_id: int, delivery_id: int) -> Delivery | None:
    """The delivery ``delivery_id`` when it is this subscriber's, else None."""
    delivery = session.get(Delivery, delivery_id)
    return delivery if delivery is not None and delivery.subscriber_id == subscriber_id else None


# -- writes ----------------------------------------------------------------------------------------------------

def add_pending(*, session: Session, email: str, email_key: str, categories: str, now: datetime,
                timezone: str | None = None) -> Subscriber:
    """A new pending row with no name (a signup's name travels in its confirmation link); flushed, so it has
    its id and the link_tag the database drew. Raises storage.faults.Conflict when another process stored it first."""
    subscriber = Subscriber(email=email, email_key=email_key, name="", categories=categories, timezone=timezone,
                            status=SubscriberStatus.pending, created_at=now, updated_at=now)
    session.add(subscriber)
    session.flush()
    return subscriber


def update_subscriber(*, subscriber: Subscriber, now: datetime, **columns) -> None:
    """Set ``columns`` on the row (written when its session commits), and updated_at to ``now``."""
    for name, value in columns.items():
        setattr(subscriber, name, value)
    subscriber.updated_at = now


def record_event(
    *, session: Session, kind: str, source: str, now: datetime, subscriber_id: int | None = None,
    delivery_id: int | None = None, issue_id: int | None = None, machine: bool = False,
    provider_event_id: str | None = None, detail: str = "",
) -> Event:
    event = Event(**event_row(kind=kind, source=source, now=now, subscriber_id=subscriber_id, delivery_id=delivery_id,
                              issue_id=issue_id, machine=machine, provider_event_id=provider_event_id, detail=detail))
    session.add(event)
    return event


# -- signups (digest.web.signup_limits) ---------------------------------------------------------------------------

def lock_signup_keys(*, session: Session, keys: Sequence[int]) -> None:
    """PostgreSQL: one signup per mailbox and per client at a time (transaction advisory locks, taken in the
    order given), so two racing requests cannot both pass the count. SQLite already serialises writers
    (BEGIN IMMEDIATE, see storage.db), and takes no lock here."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for key in keys:
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def count_signups(*, session: Session, detail: str, since: datetime) -> int:
    """Signup events with this detail (an HMAC of a mailbox or a client) recorded after ``since``."""
    query = select(func.count()).where(Event.kind == "signup", Event.detail == detail, Event.occurred_at > since)
    return session.execute(query).scalar_one()


# -- suppression and erasure -----------------------------------------------------------------------------------

def suppressed_hashes(*, connection: Connection | Session, hashes: Collection[str]) -> set[str]:
    """The address hashes among ``hashes`` that have a Suppression row. Takes a Connection or a Session."""
    found = connection.execute(select(Suppression.email_hash).where(Suppression.email_hash.in_(list(hashes))))
    return {row[0] for row in found}


def erase_subscriber(*, session: Session, subscriber: Subscriber, email_hash: str, reason: str,
                     now: datetime) -> Suppression:
    """Delete the row, its deliveries and every event about either; keep (or add) the address's Suppression."""
    deliveries = select(Delivery.id).where(Delivery.subscriber_id == subscriber.id)
    session.flush()
    session.execute(delete(Event).where(or_(Event.subscriber_id == subscriber.id, Event.delivery_id.in_(deliveries))))
    session.execute(delete(Delivery).where(Delivery.subscriber_id == subscriber.id))
    session.delete(subscriber)
    suppression = session.execute(select(Suppression).where(Suppression.email_hash == email_hash)).scalar_one_or_none()
    if suppression is None:
        suppression = Suppression(email_hash=email_hash, reason=reason, created_at=now)
        session.add(suppression)
    session.flush()
    return suppression


# -- export ----------------------------------------------------------------------------------------------------

def deliveries_with_weeks(*, session: Session, subscriber_id: int) -> list[tuple[Delivery, str]]:
    """The subscriber's deliveries, oldest first, each with its issue's week."""
    return [tuple(row) for row in session.execute(
        select(Delivery, Issue.week).join(Issue, Issue.id == Delivery.issue_id)
        .where(Delivery.subscriber_id == subscriber_id).order_by(Delivery.id)).all()]


def events_about(*, session: Session, subscriber_id: int, delivery_ids: Sequence[int]) -> Sequence[Event]:
    """Events recorded for the subscriber or for one of ``delivery_ids``, in the order they happened."""
    return session.execute(
        select(Event).where(or_(Event.subscriber_id == subscriber_id, Event.delivery_id.in_(delivery_ids)))
        .order_by(Event.occurred_at, Event.id)).scalars().all()
