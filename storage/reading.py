"""What the demo's readers read (digest.demo.readers): an issue's sent deliveries and its comparisons' links."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session

from storage.models import Comparison, Delivery, DeliveryStatus, Issue, IssueComparison, Subscriber


def sent_deliveries(*, session: Session, week: str) -> list[tuple[int, int, int, datetime, int]]:
    """(delivery id, subscriber id, issue id, sent at, the subscriber's link tag) of the issue's sent
    deliveries, in id order."""
    return session.execute(
        select(Delivery.id, Delivery.subscriber_id, Delivery.issue_id, Delivery.sent_at, Subscriber.link_tag)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id).join(Issue, Issue.id == Delivery.issue_id)
        .where(Issue.week == week, Delivery.status == DeliveryStatus.sent).order_by(Delivery.id)
    ).all()


def comparison_urls(*, session: Session, week: str) -> list[str]:
    """The URLs of the issue's comparisons, in rank order."""
    return list(session.execute(
        select(Comparison.url).join(IssueComparison, IssueComparison.comparison_id == Comparison.id)
        .join(Issue, Issue.id == IssueComparison.issue_id).where(Issue.week == week)
        .order_by(IssueComparison.rank, IssueComparison.id)
    ).scalars().all())
