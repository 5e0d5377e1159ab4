"""Changes to a subscriber's standing, each recorded as an event, from the web pages and the CLI. The Event
Webhook applies the same rules to a whole post at once, in SQL (storage.provider_events.change_standings).

Suppression is one-way: a bounced or complained address is never sent to again, and nothing here turns
it back to active; only an unsubscribed (or pending) person can come back, by their own action. A person
who asks to be forgotten leaves only a `Suppression` row: the SHA-256 of their lower-cased address, so
that an import or a signup can refuse the address without the store keeping it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from storage import subscribers as rows
from storage.models import Cadence, SubscriberStatus
from storage.subscribers import record_event
from storage.votes import forget_votes, reader_votes

if TYPE_CHECKING:
    from sqlmodel import Session

    from storage.models import Subscriber, Suppression

SUPPRESSED = frozenset({SubscriberStatus.bounced, SubscriberStatus.complained})


def unsubscribe(*, session: Session, subscriber: Subscriber, source: str, now: datetime,
                delivery_id: int | None = None, issue_id: int | None = None, detail: str = "") -> bool:
    """Unsubscribe at once; True if this changed anything (a second call is a no-op, not an error)."""
    if subscriber.status in SUPPRESSED or subscriber.status == SubscriberStatus.unsubscribed:
        return False
    rows.update_subscriber(subscriber=subscriber, now=now, status=SubscriberStatus.unsubscribed, unsubscribed_at=now)
    record_event(session=session, kind="unsubscribe", source=source, now=now, subscriber_id=subscriber.id,
                 delivery_id=delivery_id, issue_id=issue_id, detail=detail)
    return True


def resubscribe(*, session: Session, subscriber: Subscriber, source: str, now: datetime) -> bool:
    """Come back after unsubscribing. Never lifts a bounce or a complaint: those addresses stay suppressed."""
    if subscriber.status != SubscriberStatus.unsubscribed:
        return False
    rows.update_subscriber(subscriber=subscriber, now=now, status=SubscriberStatus.active, unsubscribed_at=None,
                           paused_until=None)
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
    rows.update_subscriber(subscriber=subscriber, now=now, status=status)
    return True


# -- preferences ---------------------------------------------------------------------------------------

PAUSE_WEEKS = (1, 2, 4, 8)


def set_categories(*, session: Session, subscriber: Subscriber, categories: str, now: datetime) -> bool:
    """Store the canonical categories string (see selection.canonical_categories); True if it changed."""
    if subscriber.categories == categories:
        return False
    rows.update_subscriber(subscriber=subscriber, now=now, categories=categories)
    return True


def set_timing(*, session: Session, subscriber: Subscriber, timezone: str | None, cadence: Cadence,
               now: datetime) -> bool:
    """Store the reader's time zone (checked by digest.subscribers.zones; None: DIGEST_TIMEZONE) and how often
    they hear from us; True if either changed."""
    if subscriber.timezone == timezone and Cadence(subscriber.cadence) == cadence:
        return False
    rows.update_subscriber(subscriber=subscriber, now=now, timezone=timezone, cadence=cadence.value)
    return True


def pause(*, session: Session, subscriber: Subscriber, weeks: int, now: datetime) -> datetime:
    """No issue for ``weeks`` weeks from now (the fan-out skips paused subscribers); returns the end."""
    if weeks not in PAUSE_WEEKS:
        raise ValueError(f"a pause is {', '.join(map(str, PAUSE_WEEKS))} weeks long, not {weeks}")
    rows.update_subscriber(subscriber=subscriber, now=now, paused_until=now + timedelta(weeks=weeks))
    return subscriber.paused_until


def resume(*, session: Session, subscriber: Subscriber, now: datetime) -> bool:
    if subscriber.paused_until is None:
        return False
    rows.update_subscriber(subscriber=subscriber, now=now, paused_until=None)
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
    return {by_hash[found] for found in rows.suppressed_hashes(connection=connection, hashes=by_hash.keys())}


def is_suppressed(session: Session, email_key: str) -> bool:
    """True when nothing may be sent to this address, not even a confirmation email.

    That is an address that asked to be forgotten (a Suppression row), or a known subscriber whose
    mail bounced or who reported it as spam.
    """
    if suppressed_keys(session, [email_key]):
        return True
    status = rows.status_by_email_key(session=session, email_key=email_key.strip().lower())
    return status in {s.value for s in SUPPRESSED}


def forget(*, session: Session, subscriber: Subscriber, now: datetime) -> Suppression:
    """Delete the subscriber, their deliveries, their events and their votes; keep only the address's hash.

    The reason kept is "deleted", or the bounce or complaint that already suppressed the address. The votes
    are deleted here, not left to the vote table's ON DELETE CASCADE: SQLite enforces that only on a
    connection with `PRAGMA foreign_keys=ON` (storage.db's engines; not every tool's). The pseudonymous vote events stay (the site may have them already; they name
    no one), while the readers' tally drops the votes.
    """
    forget_votes(session=session, subscriber_id=subscriber.id)
    reason = subscriber.status if subscriber.status in SUPPRESSED else "deleted"
    reason = getattr(reason, "value", reason)
    return rows.erase_subscriber(session=session, subscriber=subscriber, email_hash=email_hash(subscriber.email_key),
                                 reason=reason, now=now)


def export_data(*, session: Session, subscriber: Subscriber) -> dict:
    """Everything the store holds about one subscriber, as plain JSON-ready data: their fields, deliveries,
    events and standing votes (comparison, title, tool 1 or 2 and its name, ship or skip, when)."""
    deliveries = rows.deliveries_with_weeks(session=session, subscriber_id=subscriber.id)
    events = rows.events_about(session=session, subscriber_id=subscriber.id,
                               delivery_ids=[delivery.id for delivery, _ in deliveries])
    return {
        "subscriber": _about(subscriber),
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
        "votes": reader_votes(session=session, subscriber_id=subscriber.id),
    }


def _about(subscriber: Subscriber) -> dict:
    return {
        "email": subscriber.email,
        "name": subscriber.name,
        "status": getattr(subscriber.status, "value", subscriber.status),
        "categories": [part for part in subscriber.categories.split(";") if part],
        "categories_note": "an empty list means every category",
        "paused_until": _iso(subscriber.paused_until),
        "timezone": subscriber.timezone,
        "timezone_note": "null means the newsletter's own time zone",
        "cadence": Cadence(subscriber.cadence).value,
        "created_at": _iso(subscriber.created_at),
        "updated_at": _iso(subscriber.updated_at),
        "confirmed_at": _iso(subscriber.confirmed_at),
        "unsubscribed_at": _iso(subscriber.unsubscribed_at),
    }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
