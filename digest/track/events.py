"""What the email provider tells us happened to the emails we sent, in our words, and what we do about it.

A provider's adapter (digest.transports.sendgrid_events for SendGrid's Event Webhook) turns each item it
posts into a `ProviderEvent`; `apply_provider_events` records each once (by the provider's event id) and
applies what it says of the address: a hard bounce or a complaint suppresses the subscriber, an unsubscribe
unsubscribes them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from digest.track.guardrail import COUNTED_KINDS
from storage.db import session_scope
from storage.events import STORED_KIND
from storage.guardrail import add_reports, judged_since
from storage.models import SubscriberStatus
from storage.provider_events import (TARGET_GONE, change_standings, deliveries_named, event_time,
                                     insert_provider_events, subscribers_named, writing_turn)

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine
    from sqlmodel import Session


class ProviderEvent(NamedTuple):
    """One event the provider reports on an email we sent. A NamedTuple: a post makes ~1,000 of them, and a
    frozen dataclass took 1.5 µs each to build, a tuple 0.3 µs.

    ``kind`` is one of ours: processed, deferred, delivered, open, click, bounce (hard), soft_bounce (the
    receiving server refused for now), dropped (the provider would not send it), complaint (marked as spam),
    unsubscribe (from everything the provider sends for us), group_unsubscribe / group_resubscribe (from or
    back to this newsletter's unsubscribe group). Recorded as `Event.kind` (storage.events.STORED_KIND).
    """

    kind: str
    occurred_at: datetime
    provider_event_id: str | None = None  # the provider's id for it: each is recorded once
    delivery_id: int | None = None  # the delivery id we sent with the email, as the provider echoes it back
    email: str = ""  # the recipient's address, lower-cased: the subscriber when the delivery is unknown
    detail: str = ""  # a bounce's or a drop's reason, a click's URL, an open's user agent
    machine: bool = False  # the provider's verdict: a machine opened it
    standing: SubscriberStatus | None = None  # what it says of the address: bounced, complained or unsubscribed


@dataclass
class WebhookSummary:
    applied: int = 0
    duplicates: int = 0  # a provider event id already recorded: the provider retries until it sees a 2xx
    ignored: int = 0  # an unknown event type, or neither a known delivery nor a known address
    # issue id → the post's events that move its guardrail totals, by kind (digest.track.guardrail).
    reports: dict[int, Counter] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Target:
    subscriber_id: int
    delivery_id: int | None = None
    issue_id: int | None = None


def apply_provider_events(*, engine: Engine, events: Sequence[ProviderEvent | None], now: datetime) -> WebhookSummary:
    """Record each event once (by its provider event id) and apply bounces, complaints and unsubscribes: one
    transaction, a handful of statements whatever the number of events (storage.provider_events). None
    stands for an item the adapter read as no event we know: it is counted as ignored."""
    summary = WebhookSummary()
    known = _first_of_each(events, summary)
    # Who the events name, and their rows, before the write transaction: SQLite takes one writer at a time,
    # across processes too, so its lock is held for the writes alone and two web processes share the load.
    with engine.connect().execution_options(read_only=True) as connection, connection.begin():
        found = _found(connection, known)
    with writing_turn(engine):
        try:
            with session_scope(engine) as session:
                return _record(session, found, len(known), summary, now)
        except TARGET_GONE:
            # A reader the post names was erased meanwhile (the events' subscriber key refused them): found
            # again under the write lock, where no erase can come between.
            with session_scope(engine) as session:
                return _record(session, _found(session, known), len(known), summary, now)


def _found(connection: Connection | Session, known: list[ProviderEvent]) -> list[tuple[ProviderEvent, Target]]:
    """The events whose delivery or address is known, each with its target, in lock order (by event id:
    storage.provider_events)."""
    targets = _Targets(connection, known)
    found = [(event, target) for event in known if (target := targets.find(event)) is not None]
    found.sort(key=lambda pair: pair[0].provider_event_id or "")
    return found


def _record(session: Session, found: list[tuple[ProviderEvent, Target]], known: int, before: WebhookSummary,
            now: datetime) -> WebhookSummary:
    summary = WebhookSummary(duplicates=before.duplicates, ignored=before.ignored + known - len(found))
    inserted = insert_provider_events(session=session, rows=[_row(event, target) for event, target in found])
    applied = [(event, target) for event, target in found
               if event.provider_event_id is None or event.provider_event_id in inserted]
    summary.applied = len(applied)
    summary.duplicates += len(found) - len(applied)
    _change_standings(session, applied, now)
    summary.reports = _reports(session, applied)
    add_reports(session=session, reports=summary.reports)  # the totals move with the events, in one commit
    return summary


def _reports(session: Session, applied: list[tuple[ProviderEvent, Target]]) -> dict[int, Counter]:
    """issue id → the applied events that move its guardrail totals, by kind: those that happened since the
    issue was last resumed (digest.track.guardrail judges by when events happened, not when they arrive)."""
    counted = [(event, target.issue_id) for event, target in applied
               if target.issue_id is not None and event.kind in COUNTED_KINDS]
    since = judged_since(session=session, issue_ids={issue_id for _, issue_id in counted}) if counted else {}
    reports: dict[int, Counter] = {}
    for event, issue_id in counted:
        if issue_id not in since or event.occurred_at >= since[issue_id]:
            reports.setdefault(issue_id, Counter())[event.kind] += 1
    return reports


def _first_of_each(events: Sequence[ProviderEvent | None], summary: WebhookSummary) -> list[ProviderEvent]:
    """The post's events, an id given twice in it kept once (a duplicate, as it would be in a later post)."""
    seen: set[str] = set()
    kept = []
    for event in events:
        if event is None:
            summary.ignored += 1
        elif event.provider_event_id is None:
            kept.append(event)
        elif event.provider_event_id in seen:
            summary.duplicates += 1
        else:
            seen.add(event.provider_event_id)
            kept.append(event)
    return kept


def _row(event: ProviderEvent, target: Target) -> tuple:
    return (STORED_KIND.get(event.kind, event.kind), event_time(event.occurred_at), target.delivery_id,
            target.subscriber_id, target.issue_id, int(event.machine), event.provider_event_id, event.detail[:2000])


def _change_standings(session: Session, applied: list[tuple[ProviderEvent, Target]], now: datetime) -> None:
    unsubscribed, bounced, complained = {}, set(), set()
    for event, target in applied:
        if event.standing == SubscriberStatus.unsubscribed:
            unsubscribed.setdefault(target.subscriber_id, (target.delivery_id, target.issue_id))
        elif event.standing == SubscriberStatus.bounced:
            bounced.add(target.subscriber_id)
        elif event.standing == SubscriberStatus.complained:
            complained.add(target.subscriber_id)
    change_standings(session=session, unsubscribed=unsubscribed, bounced=bounced, complained=complained, now=now)


class _Targets:
    """Deliveries and subscribers named by a post: one query for the deliveries, and one for the addresses
    of the events whose delivery is unknown (usually none), not one per event."""

    def __init__(self, session: Connection | Session, events: list[ProviderEvent]):
        self.deliveries = deliveries_named(session=session, ids={e.delivery_id for e in events if e.delivery_id})
        orphans = {event.email for event in events if self._delivery(event) is None} - {""}
        self.by_email = subscribers_named(session=session, email_keys=orphans)

    def _delivery(self, event: ProviderEvent):
        delivery = self.deliveries.get(event.delivery_id)
        if delivery is not None and (not event.email or event.email == delivery.email_key):
            return delivery
        return None

    def find(self, event: ProviderEvent) -> Target | None:
        """By the delivery id we sent with the email (when the address agrees), else by the address."""
        delivery = self._delivery(event)
        if delivery is not None:
            return Target(subscriber_id=delivery.subscriber_id, delivery_id=delivery.id, issue_id=delivery.issue_id)
        subscriber_id = self.by_email.get(event.email)
        return Target(subscriber_id=subscriber_id) if subscriber_id is not None else None
