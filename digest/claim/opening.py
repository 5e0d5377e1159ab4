"""Open an issue: create it, claim what is published, rank it, plan its segments, fan out, and carry the
verdicts that changed to those who read them — one transaction.

Idempotent: the database constraints, not the clock, make sure an issue is opened once (a unique week) and
a comparison is claimed once (a unique comparison id).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from digest.claim.fanout import fan_out_issue
from digest.claim.local_time import LocalSchedule
from digest.claim.selection import ComparisonFacts, SegmentPlan, plan_segments, rank
from digest.claim.weeks import week_monday
from digest.votes.results import reader_results, to_json
from storage.comparisons import claimable_comparisons, claimed_comparisons
from storage.db import session_scope
from storage.faults import Conflict
from storage.issues import (
    audience_category_sets,
    claim_comparisons,
    create_issue,
    find_issue,
    refresh_delivery_statistics,
    set_ranks,
)
from storage.models import Issue
from storage.reader_results import previous_issue, votes_on_issue

if TYPE_CHECKING:
    from sqlalchemy import Engine


@dataclass(frozen=True)
class IssuePlan:
    """What opening an issue now would do: read-only, for `--dry-run` and previews."""

    ranked: list[ComparisonFacts]
    segments: list[SegmentPlan]
    audience: dict[str, int]  # subscribers by followed categories ("" = all)

    def size(self, segment: SegmentPlan) -> int:
        return sum(self.audience.get(categories, 0) for categories in segment.category_sets)


def plan_issue(*, session, now: datetime, ranked: list[ComparisonFacts] | None = None) -> IssuePlan:
    if ranked is None:
        ranked = rank(claimable_comparisons(session=session, now=now))
    audience = audience_category_sets(session=session, now=now)
    return IssuePlan(ranked=ranked, segments=plan_segments(ranked, audience), audience=audience)


def _results_of_previous(session, issue: Issue) -> int | None:
    """Fix the readers' votes on the previous issue into ``issue`` (issue 17); that issue's id when there are
    any to tell its readers, else None."""
    previous = previous_issue(session=session, week=issue.week)
    if previous is None:
        return None
    issue.reader_results = to_json(reader_results(votes_on_issue(session=session, issue_id=previous.id)))
    return previous.id if issue.reader_results else None


@dataclass
class Opened:
    issue: Issue | None
    created: bool
    claimed: int = 0
    deliveries: int = 0
    unmatched: int = 0  # active subscribers who follow none of the claimed comparisons' categories
    changes: int = 0  # verdict changes carried (digest.claim.changes)
    told: int = 0  # readers who get them
    results_told: int = 0  # readers of the previous issue who get its readers' results (issue 17)


def open_issue(*, engine: Engine, week: str, now: datetime, engaged_first: bool = False,
               local: LocalSchedule | None = None) -> Opened:
    """Create issue ``week``, claim what is published, fan out: one transaction, all or nothing.

    If the issue exists (a rerun, or another scheduler won the race) it is returned as it is: its
    content and audience were fixed when it was opened. No claimable comparison: no issue.
    ``engaged_first``: readers are queued most engaged first (a warm-up, digest.send.warmup).
    ``local``: each delivery is due at the schedule's time in its reader's zone (DIGEST_DELIVERY=local).
    """
    week_monday(week)  # validates the label
    try:
        with session_scope(engine) as session:
            existing = find_issue(session=session, week=week)
            if existing is not None:
                return Opened(issue=existing, created=False)
            issue = create_issue(session=session, week=week, now=now)  # a racing process fails here or below
            claim_comparisons(session=session, issue_id=issue.id, now=now)
            ranked = rank(claimed_comparisons(session=session, issue_id=issue.id))
            if not ranked:
                session.rollback()
                return Opened(issue=None, created=False)
            set_ranks(session=session, issue_id=issue.id, ranked_ids=[c.id for c in ranked])
            plan = plan_issue(session=session, now=now, ranked=ranked)
            previous = _results_of_previous(session, issue)
            due = local.due(session=session, week=week, now=now) if local is not None else None
            fanned = fan_out_issue(session=session, issue_id=issue.id, planned=plan.segments, now=now,
                                   results_from=previous, engaged_first=engaged_first, due=due)
            deliveries = fanned.deliveries
            refresh_delivery_statistics(session=session)
            issue.fanned_out_at = now
            unmatched = sum(plan.audience.values()) - deliveries
            if deliveries == 0:
                issue.completed_at = now  # claimed, but nobody to send to: done, and the claim stands
            return Opened(issue=issue, created=True, claimed=len(ranked), deliveries=deliveries, unmatched=unmatched,
                          changes=fanned.changes, told=fanned.told, results_told=fanned.results_told)
    except Conflict:
        with session_scope(engine) as session:
            existing = find_issue(session=session, week=week)
        if existing is None:
            raise
        return Opened(issue=existing, created=False)
