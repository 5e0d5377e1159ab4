"""The weekly run: open this week's issue (claim + fan-out) when its slot has come, and send it.

One idempotent function serves the cron trigger, the catch-up at start and every hourly tick: the
database constraints, not the clock, make sure an issue is opened once and each email is sent once.

A paused issue is never resumed here (only `digest issue resume` lifts a pause), nor a cancelled one sent:
the run passes over them and says so, in its result and in the log (issue 18).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime

from digest.claim.local_time import LOCAL_AHEAD, LocalSchedule, opens_at
from digest.claim.monthly import MonthlyOpened, open_monthly
from digest.claim.opening import Opened, open_issue
from digest.claim.weeks import iso_week, slot
from digest.send.loop import Sender, SendReport
from digest.services import Services
from digest.track.stats import IssueState
from storage.comparisons import claimable_comparisons
from storage.issues import find_issue, paused_issues, unfinished_issues
from storage.models import Issue

log = logging.getLogger("digest.weekly")


@dataclass
class RunResult:
    week: str
    opened: Opened | None = None
    reports: list = field(default_factory=list)  # SendReport per issue sent or resumed
    reason: str = ""  # why nothing new was opened, in words
    held: dict[str, str] = field(default_factory=dict)  # week → why that issue is paused or cancelled, in words
    monthly: MonthlyOpened | None = None  # the scheduler's monthly email (issue 19); None with ``week``

    def hold(self, week: str, state: IssueState) -> None:
        """Say (once) that the issue of ``week`` is not sending, and why; the scheduler's log has it too."""
        if week not in self.held:
            self.held[week] = state.sentence(week)
            log.info("%s", self.held[week])

    def add(self, report: SendReport) -> None:
        self.reports.append(report)
        if report.halted:  # paused or cancelled while this run sent it: it stopped after the batch in flight
            state = IssueState.halted(report.halted)
            if state.halts:
                self.hold(report.week, state)
            else:  # a warm-up's day is used up: the hourly catch-up sends the rest when the next day opens
                log.info("%s", state.sentence(report.week))


def state_of(issue: Issue) -> IssueState:
    return IssueState.of(created_at=issue.created_at, completed_at=issue.completed_at, paused_at=issue.paused_at,
                         pause_reason=issue.pause_reason, cancelled_at=issue.cancelled_at)


def run(*, services: Services, sender: Sender, now: datetime, week: str | None = None) -> RunResult:
    """The week's run (`_run_week`), then for the scheduler the month's: on the first scheduled day of a month,
    the monthly readers' email opens once the week's issue is out, and is sent (digest.claim.monthly)."""
    result = _run_week(services=services, sender=sender, now=now, week=week)
    if week is None:
        settings = services.settings
        result.monthly = services.retrying(lambda: open_monthly(engine=services.engine, schedule=settings.send_schedule,
                                                                tz=settings.tz, now=now, local=LocalSchedule.of(settings)))
        if result.monthly.label is not None:
            log.info("%s", result.monthly.sentence())
        if result.monthly.created:
            result.add(sender.send_issue(result.monthly.issue))
    return result


def _run_week(*, services: Services, sender: Sender, now: datetime, week: str | None = None) -> RunResult:
    """The weekly job: resume unfinished issues, then open and send the week's issue when it is due.

    Without ``week`` (the scheduler): the current week's issue opens once its scheduled slot has passed
    and something was published by then; a later tick in the same week finds the issue and only resumes.
    With ``week`` (an editor): that issue opens now, early or late, with what is published now.
    """
    settings = services.settings
    result = RunResult(week=week or services.transaction(lambda session: current_week(session, settings, now)))

    # Every step waits out a database outage, as the send loop's own transactions do.
    unfinished, paused = services.transaction(
        lambda session: (unfinished_issues(session=session), paused_issues(session=session)))
    for issue in paused:
        result.hold(issue.week, state_of(issue))
    for issue in unfinished:
        result.add(sender.send_issue(issue))
    if week is None:
        result.reason = services.transaction(lambda session: not_due(session, settings, week=result.week, now=now))
        if result.reason:
            return result
    engaged_first = services.settings.warmup_start is not None  # a warm-up sends to the most engaged first
    local = LocalSchedule.of(settings)  # each reader at their own hour (DIGEST_DELIVERY=local)
    result.opened = services.retrying(lambda: open_issue(engine=services.engine, week=result.week, now=now,
                                                         engaged_first=engaged_first, local=local))
    if result.opened.issue is None:
        result.reason = "no new comparison since the last issue: no issue, no email"
        return result
    if not result.opened.created and state_of(result.opened.issue).halts:
        result.hold(result.week, state_of(result.opened.issue))
        return result
    if not result.opened.created and result.opened.issue.completed_at is not None:
        if all(report.week != result.week for report in result.reports):  # not finished by this run's resume
            result.reason = f"issue {result.week} was already sent"
        return result
    if all(report.week != result.week for report in result.reports) and result.week not in result.held:
        opened = result.opened.deliveries if result.opened.created else None
        result.add(sender.send_issue(result.opened.issue, opened=opened))
    return result


def current_week(session, settings, now: datetime) -> str:
    """The week the scheduler works on: this week in DIGEST_TIMEZONE; with local delivery, the next one once this
    one is open and the next one's first readers (up to a day ahead of DIGEST_TIMEZONE) may already be due."""
    week = iso_week(now.astimezone(settings.tz))
    if settings.delivery == "local":
        ahead = iso_week((now + LOCAL_AHEAD).astimezone(settings.tz))
        if ahead != week and find_issue(session=session, week=week) is not None:
            return ahead
    return week


def not_due(session, settings, *, week: str, now: datetime) -> str:
    """Why the scheduler opens no issue for ``week`` now, in words; "" when it is due."""
    due_at = slot(week, schedule=settings.send_schedule, tz=settings.tz)
    # An issue opened by hand before its slot is the week's issue: say so, not "not due yet".
    if find_issue(session=session, week=week) is not None:
        return f"issue {week} already exists"
    if due_at is None:
        return f"the schedule {settings.send_schedule!r} does not fire in {week}"
    local = LocalSchedule.of(settings)
    if local is not None:  # it opens a little before the first reader's hour, wherever that reader lives
        due_at = opens_at(local.due(session=session, week=week, now=now, at_once=False)) or due_at
        if due_at > now:
            return (f"issue {week} is not due yet (it opens {due_at:%a %d %b %H:%M %Z}, before the schedule's hour "
                    "comes in its first reader's time zone)")
    elif due_at > now:
        return f"issue {week} is not due yet (scheduled for {due_at:%a %d %b %H:%M %Z})"
    if not claimable_comparisons(session=session, now=due_at):
        return f"nothing was published for {week} by its slot; it rolls into the next issue"
    return ""
