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
from typing import TYPE_CHECKING

from digest.subscribers.subscriptions import suppress, unsubscribe
from digest.track.guardrail import COUNTED_KINDS
from storage.db import session_scope
from storage.events import deliveries_by_id, event_row, insert_event_once, subscribers_by_email
from storage.guardrail import add_reports
from storage.models import SubscriberStatus
from storage.subscribers import find_subscriber

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlmodel import Session


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    """One event the provider reports on an email we sent.

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


@dataclass(frozen=True)
class Target:
    subscriber_id: int
    delivery_id: int | None = None
    issue_id: int | None = None


def apply_provider_events(*, engine: Engine, events: Sequence[ProviderEvent | None], now: datetime) -> WebhookSummary:
    """Record each event once (by its provider event id) and apply bounces, complaints and unsubscribes: one
    transaction. None stands for an item the adapter read as no event we know: it is counted as ignored."""
    summary = WebhookSummary()
    with session_scope(engine) as session:
        targets = _Targets(session, [event for event in events if event is not None])
        for event in events:
            target = targets.find(event) if event is not None else None
            if target is None:
                summary.ignored += 1
                continue
            if not insert_event_once(session=session, row=event_row(
                    kind=event.kind, source="webhook", now=event.occurred_at, detail=event.detail,
                    machine=event.machine, delivery_id=target.delivery_id, subscriber_id=target.subscriber_id,
                    issue_id=target.issue_id, provider_event_id=event.provider_event_id)):
                summary.duplicates += 1
                continue
            summary.applied += 1
            if target.issue_id is not None and event.kind in COUNTED_KINDS:
                summary.reports.setdefault(target.issue_id, Counter())[event.kind] += 1
            if event.standing is not None:
                _change_standing(session, target, event.standing, now)
        add_reports(session=session, reports=summary.reports)  # the totals move with the events, in one commit
    return summary


def _change_standing(session: Session, target: Target, status: SubscriberStatus, now: datetime) -> None:
    subscriber = find_subscriber(session=session, subscriber_id=target.subscriber_id)
    if status == SubscriberStatus.unsubscribed:
        unsubscribe(session=session, subscriber=subscriber, source="webhook", now=now,
                    delivery_id=target.delivery_id, issue_id=target.issue_id)
    else:
        suppress(session=session, subscriber=subscriber, status=status, source="webhook", now=now,
                 delivery_id=target.delivery_id, issue_id=target.issue_id)
    session.flush()


class _Targets:
    """Deliveries and subscribers named by a post, loaded in two queries, not one per event."""

    def __init__(self, session: Session, events: list[ProviderEvent]):
        ids = {event.delivery_id for event in events if event.delivery_id is not None}
        self.deliveries = deliveries_by_id(session=session, ids=ids)
        self.by_email = subscribers_by_email(session=session, email_keys={event.email for event in events} - {""})

    def find(self, event: ProviderEvent) -> Target | None:
        """By the delivery id we sent with the email (when the address agrees), else by the address."""
        delivery = self.deliveries.get(event.delivery_id)
        if delivery is not None and (not event.email or event.email == delivery.email_key):
            return Target(subscriber_id=delivery.subscriber_id, delivery_id=delivery.id, issue_id=delivery.issue_id)
        subscriber_id = self.by_email.get(event.email)
        return Target(subscriber_id=subscriber_id) if subscriber_id is not None else None
