"""The weekly run: open this week's issue (claim + fan-out) when its slot has come, and send it.

One idempotent function serves the cron trigger, the catch-up at start and every hourly tick: the
database constraints, not the clock, make sure an issue is opened once and each email is sent once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from digest.claim.selection import ComparisonFacts, SegmentPlan, plan_segments, rank
from storage.comparisons import claimable_comparisons, claimed_comparisons
from storage.issues import audience_category_sets, claim_comparisons, fan_out, find_issue, refresh_delivery_statistics, set_ranks, unfinished_issues
from storage.db import retrying, session_scope
from storage.models import Issue, Segment

_LABEL = re.compile(r"(\d{4})-W(\d{2})")  # how the store names a week: "2026-W48"
_WRITTEN = re.compile(r"(\d{4})-?W(\d{1,2})", re.IGNORECASE)  # as a person may write it: "2026-w48", "2026W9"


class BadWeek(ValueError):
    """``text`` names no ISO week; ``problem`` says why and what to write instead."""

    def __init__(self, text: str, problem: str):
        super().__init__(f"week {_shown(text)} {problem}")
        self.text = text
        self.problem = problem

    def for_option(self, option: str = "--week") -> str:
        """The message about a command-line option: "--week 'banana' is not an ISO week: write it as 2026-W49"."""
        return f"{option} {_shown(self.text)} {self.problem}"


def _shown(text: str) -> str:
    return repr(text) if len(text) <= 40 else repr(text[:39]) + "…"  # repr: control characters escaped


def iso_week(moment: datetime | date) -> str:
    year, week, _ = moment.isocalendar()
    return f"{year}-W{week:02d}"


def weeks_in(year: int) -> int:
    """52 or 53: 28 December always lies in the last ISO week of its year."""
    return date(year, 12, 28).isocalendar().week


def parse_week(text: str, *, today: date) -> str:
    """An ISO week as a person writes it ("2026-W49", "2026-w49", "2026W9") as the store's label ("2026-W09").

    BadWeek says what is wrong: not a week at all (showing ``today``'s week as the form to write), or a
    week its year does not have (2026-W54: 2026 has 53).
    """
    match = _WRITTEN.fullmatch(text.strip())
    if not match:
        raise BadWeek(text, f"is not an ISO week: write it as {iso_week(today)}")
    year, number = int(match[1]), int(match[2])
    if year < 1:
        raise BadWeek(text, f"does not exist: years start at 0001; this week is {iso_week(today)}")
    last = weeks_in(year)
    if not 1 <= number <= last:
        raise BadWeek(text, f"does not exist: {year} has weeks {year}-W01 to {year}-W{last}")
    return f"{year}-W{number:02d}"


def week_monday(week: str) -> date:
    """The Monday of a week label as the store writes it ("2026-W48"); BadWeek for anything else."""
    if not _LABEL.fullmatch(week):
        raise BadWeek(week, "is not an ISO week label of the form 2026-W48")
    year, number = int(week[:4]), int(week[6:])
    if year < 1 or not 1 <= number <= weeks_in(year):
        raise BadWeek(week, f"does not exist: {year} has no week {number}")
    return date.fromisocalendar(year, number, 1)


def cron_trigger(schedule: str, tz) -> CronTrigger:
    """The send schedule as an APScheduler trigger. Raises ValueError on a bad crontab line."""
    return CronTrigger.from_crontab(schedule, timezone=tz)


def slot(week: str, *, schedule: str, tz) -> datetime | None:
    """When the schedule fires in ``week`` (its first firing on or after Monday 00:00), or None."""
    monday = datetime.combine(week_monday(week), time.min, tzinfo=tz)
    fire = cron_trigger(schedule, tz).get_next_fire_time(None, monday)
    if fire is None or fire >= monday + timedelta(days=7):
        return None
    return fire


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


@dataclass
class Opened:
    issue: Issue | None
    created: bool
    claimed: int = 0
    deliveries: int = 0
    unmatched: int = 0  # active subscribers who follow none of the claimed comparisons' categories


def open_issue(*, engine: Engine, week: str, now: datetime) -> Opened:
    """Create issue ``week``, claim what is published, fan out: one transaction, all or nothing.

    If the issue exists (a rerun, or another scheduler won the race) it is returned as it is: its
    content and audience were fixed when it was opened. No claimable comparison: no issue.
    """
    week_monday(week)  # validates the label
    try:
        with session_scope(engine) as session:
            existing = find_issue(session=session, week=week)
            if existing is not None:
                return Opened(issue=existing, created=False)
            issue = Issue(week=week, created_at=now)
            session.add(issue)
            session.flush()  # a racing process blocks here on the unique week, then fails below
            claimed = claim_comparisons(session=session, issue_id=issue.id, now=now)
            if claimed == 0:
                session.rollback()
                return Opened(issue=None, created=False)
            ranked = rank(claimed_comparisons(session=session, issue_id=issue.id))
            set_ranks(session=session, issue_id=issue.id, ranked_ids=[c.id for c in ranked])
            plan = plan_issue(session=session, now=now, ranked=ranked)
            deliveries = 0
            for planned in plan.segments:
                segment = Segment(issue_id=issue.id, key=planned.key, audience=planned.audience,
                                  comparison_ids=",".join(map(str, planned.comparison_ids)))
                session.add(segment)
                session.flush()
                segment.size = fan_out(session=session, issue_id=issue.id, segment_id=segment.id,
                                               category_sets=planned.category_sets, now=now)
                deliveries += segment.size
            refresh_delivery_statistics(session=session)
            issue.fanned_out_at = now
            unmatched = sum(plan.audience.values()) - deliveries
            if deliveries == 0:
                issue.completed_at = now  # claimed, but nobody to send to: done, and the claim stands
            return Opened(issue=issue, created=True, claimed=claimed, deliveries=deliveries, unmatched=unmatched)
    except IntegrityError:
        with session_scope(engine) as session:
            existing = find_issue(session=session, week=week)
        if existing is None:
            raise
        return Opened(issue=existing, created=False)


@dataclass
class RunResult:
    week: str
    opened: Opened | None = None
    reports: list = field(default_factory=list)  # SendReport per issue sent or resumed
    reason: str = ""  # why nothing new was opened, in words


def run(*, sender, now: datetime, week: str | None = None) -> RunResult:
    """The weekly job: resume unfinished issues, then open and send the week's issue when it is due.

    Without ``week`` (the scheduler): the current week's issue opens once its scheduled slot has passed
    and something was published by then; a later tick in the same week finds the issue and only resumes.
    With ``week`` (an editor): that issue opens now, early or late, with what is published now.
    """
    settings = sender.settings
    engine = sender.engine
    result = RunResult(week=week or iso_week(now.astimezone(settings.tz)))

    # Every step waits out a database outage, as the sender's own transactions do.
    unfinished = sender.transaction(lambda session: unfinished_issues(session=session))
    for issue in unfinished:
        result.reports.append(sender.send_issue(issue))
    if week is None:
        due_at = slot(result.week, schedule=settings.send_schedule, tz=settings.tz)

        def due_state(session) -> str:
            # An issue opened by hand before its slot is the week's issue: say so, not "not due yet".
            if find_issue(session=session, week=result.week) is not None:
                return f"issue {result.week} already exists"
            if due_at is None:
                return f"the schedule {settings.send_schedule!r} does not fire in {result.week}"
            if due_at > now:
                return f"issue {result.week} is not due yet (scheduled for {due_at:%a %d %b %H:%M %Z})"
            if not claimable_comparisons(session=session, now=due_at):
                return f"nothing was published for {result.week} by its slot; it rolls into the next issue"
            return ""

        result.reason = sender.transaction(due_state)
        if result.reason:
            return result
    result.opened = retrying(lambda: open_issue(engine=engine, week=result.week, now=now),
                             budget=settings.db_retry_seconds, sleep=sender.sleep)
    if result.opened.issue is None:
        result.reason = "no new comparison since the last issue: no issue, no email"
        return result
    if not result.opened.created and result.opened.issue.completed_at is not None:
        if all(report.week != result.week for report in result.reports):  # not finished by this run's resume
            result.reason = f"issue {result.week} was already sent"
        return result
    if all(report.week != result.week for report in result.reports):
        result.reports.append(sender.send_issue(result.opened.issue))
    return result
