"""The guardrail's SQL (digest.track.guardrail defines the rule): running totals of what the Event Webhook
reports of each issue's emails, the issues still sending among those a post touched, and the alert's claim.

Cost per webhook post, whatever the issue's size: one UPDATE by primary key per touched issue (the post's
own transaction's last statement, so its row lock lasts until that commit only), then one short read-only
transaction (no SQLite write lock) with one SELECT by primary key of the touched issues — measured on
PostgreSQL (a busy test machine): the check ~3-5 ms per post, the same for an issue of 5,000 events as of
250,000, after a post of 1,000 events that itself took ~1.4 s. Counting the issue's events per post
instead (ix_event_issue_id, then a filter on kind; count DISTINCT per delivery) grew with the send: 19 ms
at 5,000 events, 49 ms at 50,000, 380 ms at 250,000 — too slow for a webhook taking 10,000 events a second
(issue 21). A post with no delivered, bounce, dropped or spam report event (opens, clicks) runs neither
statement.

Events count by when they happened: after a resume, only those that happened since (`judged_since`, one
SELECT by primary key per post that has counted events), however late the webhook brings the others.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import select, update
from sqlmodel import Session

from storage.models import Issue
from storage.raw import Raw

# A provider event (ours: digest.track.events.ProviderEvent.kind) → the total it adds one to. Each is recorded
# once (by the provider's event id), and each message ends in one of delivered, bounce or dropped, so their
# sum counts messages whose outcome is known. Not "processed": it comes before the outcome, and counting
# it too would count each message twice. A soft bounce ("blocked") is retried by the provider: no outcome.
REPORTED = {"delivered": Issue.reported_delivered, "bounce": Issue.reported_bounced,
            "dropped": Issue.reported_dropped, "complaint": Issue.reported_complaints}


class IssueOutcomes(NamedTuple):
    """What the provider has reported of one issue's emails."""

    issue_id: int
    week: str
    delivered: int
    bounced: int  # hard bounces
    dropped: int
    complaints: int  # reported as spam

    @property
    def known(self) -> int:
        """Emails whose outcome is known: delivered, bounced or dropped."""
        return self.delivered + self.bounced + self.dropped

    @property
    def failed(self) -> int:
        return self.bounced + self.dropped


def add_reports(*, session: Session, reports: Mapping[int, Counter]) -> None:
    """Add a post's events to the totals: issue id → Counter of our event kinds (those in REPORTED). Issues in
    id order, so two posts touching the same issues lock them in the same order and never deadlock."""
    for issue_id in sorted(reports):
        counts = reports[issue_id]
        values = {column.key: column + counts[kind] for kind, column in REPORTED.items() if counts[kind]}
        if values:
            session.execute(update(Issue).where(Issue.id == issue_id).values(**values))


def judged_since(*, session: Session, issue_ids: Iterable[int]) -> dict[int, datetime]:
    """issue id → the time from which its events count (`Issue.judged_since`), for the issues among ``issue_ids``
    resumed since they were paused; the others count every event."""
    ids = sorted(set(issue_ids))
    if not ids:
        return {}
    raw = Raw(session)
    rows = raw.fetch(f"SELECT id, judged_since FROM issue WHERE id {raw.among('ids')} AND judged_since IS NOT NULL",
                     {"ids": raw.ids(ids)})
    return {issue_id: raw.read_time(since) for issue_id, since in rows}


def sending_issues(*, session: Session, issue_ids: Iterable[int]) -> list[IssueOutcomes]:
    """The totals of the issues among ``issue_ids`` that may still send: not paused, cancelled or finished."""
    ids = set(issue_ids)
    if not ids:
        return []
    rows = session.execute(select(Issue.id, Issue.week, *REPORTED.values()).where(
        Issue.id.in_(ids), Issue.paused_at.is_(None), Issue.cancelled_at.is_(None), Issue.completed_at.is_(None))
        .order_by(Issue.id))
    return [IssueOutcomes(*row) for row in rows]


def claim_alert(*, session: Session, issue_id: int, now: datetime) -> bool:
    """Mark the issue's alert as sent unless it was; whether this call did (two processes that pause the same
    issue at once — only the one that paused it asks — and a resumed issue that trips again alert once)."""
    result = session.execute(update(Issue).where(Issue.id == issue_id, Issue.alerted_at.is_(None))
                             .values(alerted_at=now))
    return result.rowcount == 1
