"""The welcome email's SQL (digest.subscribers.welcome decides; issue 19, item 3): the once-only claim of a
reader's welcome, and the issue whose verdicts it shows.

Keyword-only functions over a Session; each runs inside the caller's transaction.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlmodel import Session

from storage.models import Issue, IssueKind, Subscriber


def claim_welcome(*, session: Session, subscriber_id: int, now: datetime) -> bool:
    """Mark the reader welcomed at ``now``; True when this call did it, so the welcome is the caller's to send.

    One conditional UPDATE: of two transactions confirming the same reader at once, the second waits for the
    first's row lock (PostgreSQL) or its write lock (SQLite, BEGIN IMMEDIATE), then finds ``welcomed_at`` set
    and updates nothing. A reader is welcomed at most once, whatever links they press and however often.
    """
    result = session.execute(
        update(Subscriber).where(Subscriber.id == subscriber_id, Subscriber.welcomed_at.is_(None))
        .values(welcomed_at=now).execution_options(synchronize_session=False))
    return result.rowcount == 1


def latest_weekly_issue(*, session: Session) -> Issue | None:
    """The most recent weekly issue that went out (fanned out, not cancelled), or None before the first one.
    A monthly issue repeats weekly ones, and a cancelled one was withdrawn: neither is "the latest issue"."""
    return session.execute(
        select(Issue).where(Issue.kind == IssueKind.weekly.value, Issue.fanned_out_at.is_not(None),
                            Issue.cancelled_at.is_(None))
        .order_by(Issue.week.desc()).limit(1)
    ).scalars().first()
