"""What the demo runner reads: the segments of its issues and who got each first, to preview them."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlmodel import Session

from storage.models import Delivery, Issue, Segment, Subscriber


def first_readers(*, session: Session, weeks: Sequence[str]) -> list[tuple[str, str, str | None]]:
    """(week, audience, email of the segment's first delivery) per segment of the issues of ``weeks``,
    the latest week first and the biggest segment first within a week."""
    rows = session.execute(
        select(Issue.week, Segment.id, Segment.audience)
        .join(Segment, Segment.issue_id == Issue.id)
        .where(Issue.week.in_(weeks))
        .order_by(Issue.week.desc(), Segment.size.desc())
    ).all()
    readers = []
    for week, segment_id, audience in rows:
        email = session.execute(
            select(Subscriber.email).join(Delivery, Delivery.subscriber_id == Subscriber.id)
            .where(Delivery.segment_id == segment_id).order_by(Delivery.id).limit(1)
        ).scalars().first()
        readers.append((week, audience, email))
    return readers
