"""The dry run: who would get what if the issue were sent now, and who gets nothing and why. Read-only."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from digest.claim.monthly import month_of_day, next_month_slot, plan_monthly
from digest.claim.opening import IssuePlan, plan_issue
from digest.claim.selection import ComparisonFacts, cap
from digest.claim.weeks import iso_week
from digest.editor.preview import issue_and_ranked, week_asked
from digest.importing.feed import FeedReport, feed_report
from digest.render import mail
from digest.services import Services
from digest.track.stats import IssueState
from storage.db import session_scope
from storage.audience import PAUSED, LeftOut, SentIssue, left_out, sent_issue
from storage.changes import readers_of, waiting_changes, waiting_origins
from storage.comparisons import comparison_titles
from storage.deliveries import status_counts
from storage.issues import find_issue, segment_count
from storage.models import DeliveryStatus, Issue
from storage.monthly import issue_weeks, monthly_readers


@dataclass(frozen=True)
class SegmentSummary:
    audience: str
    recipients: int
    titles: list[str]  # in rank order, all the segment sees
    shown: int
    subject: str
    html_bytes: int


@dataclass(frozen=True)
class ChangesSummary:
    """The verdict changes the issue would carry (issue 16, item 3), and to how many readers at most."""

    lines: list[str]  # "Cellmind vs Quill: Cellmind 4 ship / 0 skip → 1 ship / 3 skip (first sent in 2026-W47)"
    readers: int  # who got the originals and are in the audience now


@dataclass(frozen=True)
class MonthlySummary:
    """The monthly email (issue 19) as the dry run sees it: on its day, who gets it, in how many segments,
    covering which weekly issues; on other days, when the next one goes and how many read it."""

    label: str  # "2026-M12"
    at: datetime  # its slot
    today: bool  # it is due today: the rest describes it; else: readers is every monthly reader now
    readers: int  # who get it (today), or the monthly readers (another day)
    segments: int = 0
    covers: list[str] = field(default_factory=list)  # the weekly issues it covers
    opened: bool = False  # opened already: readers and segments are its own

    def sentence(self, *, tz) -> str:
        when = f"{self.at.astimezone(tz):%a %d %b %Y %H:%M %Z}"
        readers = f"{self.readers} monthly reader{'s' if self.readers != 1 else ''}"
        if not self.today:
            return f"next monthly email: {self.label} on {when}, to the {readers} (each with what they skipped)"
        if not self.covers:
            return f"monthly email {self.label} is due today ({when}): no weekly issue to cover, no monthly email"
        covering = ", ".join(self.covers)
        if not self.readers:
            return (f"monthly email {self.label} is due today ({when}), covering {covering}: no monthly reader has "
                    "anything new in it, no monthly email")
        state = "opened" if self.opened else "due today"
        return (f"monthly email {self.label} ({state}, {when}): {readers} in {self.segments} "
                f"segment{'s' if self.segments != 1 else ''}, covering {covering}")

    def as_dict(self) -> dict:
        return {"label": self.label, "at": self.at.isoformat(), "today": self.today, "opened": self.opened,
                "readers": self.readers, "segments": self.segments, "covers": self.covers}


LISTED = 50  # people named in the dry run's "get nothing" list; --json names them all


@dataclass(frozen=True)
class DryRun:
    week: str
    exists: bool
    titles: list[str]
    segments: list[SegmentSummary]
    nothing: dict[str, int]  # who gets nothing, by reason (storage.audience.REASONS)
    left_out: list[LeftOut] = field(default_factory=list)  # the first of them, by reason then address
    sent: SentIssue | None = None  # the issue already went out: nothing else is filled in
    feed: FeedReport | None = None  # what DIGEST_COMPARISONS_FEED_URL last answered; None: no feed configured
    changes: ChangesSummary | None = None  # verdicts that changed, waiting for this issue; None: none
    state: IssueState | None = None  # sending, paused (why), cancelled or done (issue 18); None: not opened yet
    deliveries: dict[str, int] = field(default_factory=dict)  # the opened issue's deliveries by status
    monthly: MonthlySummary | None = None  # this week's dry run: the monthly email; None: no monthly reader

    @property
    def to_send(self) -> int:
        """Deliveries pending or in flight: what resuming a paused issue would send."""
        return self.deliveries.get(DeliveryStatus.pending.value, 0) + self.deliveries.get(DeliveryStatus.sending.value, 0)

    def as_dict(self, *, tz) -> dict:
        """For `digest send --dry-run --json`: plain JSON-ready data."""
        feed = self.feed.as_dict() if self.feed else None
        monthly = self.monthly.as_dict() if self.monthly else None
        state = {**(self.state or IssueState(None)).as_dict(), "to_send": self.to_send if self.state else None}
        if self.sent:
            sent = self.sent
            return {"week": self.week, "feed": feed, **state, "already_sent": {
                "first_sent_at": _iso(sent.first_sent_at), "closed_at": _iso(sent.closed_at),
                "readers": sent.readers, "still_to_send": sent.to_send}, "monthly": monthly}
        return {
            "week": self.week, "feed": feed, **state, "exists": self.exists, "comparisons": self.titles,
            "segments": [vars(segment) for segment in self.segments],
            "verdicts_changed": vars(self.changes) if self.changes else None,
            "recipients": sum(segment.recipients for segment in self.segments),
            "get_nothing": {"counts": self.nothing,
                            "people": [{"email": person.email, "reason": reason_text(person, tz=tz)}
                                       for person in self.left_out]},
            "monthly": monthly,
        }


def state_sentence(plan: DryRun) -> str | None:
    """Why an opened issue is not sending, and what a resume would send; None while it may send or is done."""
    state, week = plan.state, plan.week
    if state is None or not state.halts:
        return None
    if state.name == "cancelled":
        cancelled = plan.deliveries.get(DeliveryStatus.cancelled.value, 0)
        sent = plan.deliveries.get(DeliveryStatus.sent.value, 0)
        return f"{state.sentence(week)} ({cancelled} deliveries cancelled, {sent} sent before)"
    resuming = (f"resuming would send the {plan.to_send} deliveries left" if plan.to_send
                else "nothing is left to send")
    return f"{state.sentence(week)}; {resuming}"


def reason_text(person: LeftOut, *, tz) -> str:
    """Why ``person`` gets nothing, in words: "unsubscribed", "paused until 2026-12-14"."""
    if person.reason == PAUSED and person.paused_until is not None:
        return f"paused until {person.paused_until.astimezone(tz).date().isoformat()}"
    return person.reason


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def dry_run(*, services: Services, week: str | None, now: datetime, limit: int | None = LISTED) -> DryRun:
    """Who would get what if the issue were sent now, and who gets nothing and why (the first ``limit``
    people, all with None). An issue that already went out, in part or in full, is only described."""
    settings = services.settings
    week = week_asked(week, now=now, tz=settings.tz)
    with session_scope(services.engine) as session:
        feed = feed_report(session=session, url=settings.comparisons_feed_url)
        issue, ranked = issue_and_ranked(session, week=week, now=now)
        sent = sent_issue(session=session, issue=issue) if issue is not None else None
        state, deliveries = _standing(session, issue)
        monthly = None
        if week == iso_week(now.astimezone(settings.tz)):  # the monthly email goes with this week's issue
            monthly = monthly_summary(session, settings, now=now, pending=ranked if issue is None else (), week=week)
        if sent is not None or (state is not None and state.name == "cancelled"):
            return DryRun(week=week, exists=True, titles=[], segments=[], nothing={}, sent=sent, feed=feed,
                          state=state, deliveries=deliveries, monthly=monthly)
        plan: IssuePlan = plan_issue(session=session, now=now, ranked=ranked)
        titles_by_id = comparison_titles(session=session, ids=[c.id for c in ranked])
        summaries = []
        for segment in plan.segments:
            shown = cap(segment.comparison_ids, settings.max_shown)[0]
            email = mail.render_segment(session=session, renderer=services.renderer, settings=settings, week=week,
                                        opened_at=issue.created_at if issue else now,
                                        comparison_ids=segment.comparison_ids, audience=segment.audience)
            summaries.append(SegmentSummary(
                audience=segment.audience, recipients=plan.size(segment),
                titles=[titles_by_id[i] for i in segment.comparison_ids], shown=len(shown),
                subject=email.subject, html_bytes=len(email.html.encode()),
            ))
        reached = sorted({categories for segment in plan.segments for categories in segment.category_sets})
        nothing, people = left_out(session=session, now=now, reached=reached if ranked else None, limit=limit)
        changes = changes_summary(session, now=now) if ranked and issue is None else None
    return DryRun(week=week, exists=issue is not None, titles=[titles_by_id[c.id] for c in ranked],
                  segments=summaries, nothing=nothing, left_out=people, feed=feed, changes=changes, state=state,
                  deliveries=deliveries, monthly=monthly)


def _standing(session, issue: Issue | None) -> tuple[IssueState | None, dict[str, int]]:
    """The opened issue's state and its deliveries by status; (None, {}) before it opens."""
    if issue is None:
        return None, {}
    state = IssueState.of(created_at=issue.created_at, completed_at=issue.completed_at, paused_at=issue.paused_at,
                          pause_reason=issue.pause_reason, cancelled_at=issue.cancelled_at)
    return state, status_counts(session=session, issue_id=issue.id)


def changes_summary(session, *, now: datetime) -> ChangesSummary | None:
    """What opening the issue now would carry of the verdicts that changed, in one line each."""
    changes = waiting_changes(session=session)
    if not changes:
        return None
    lines = [f"{change.title}: {change.tool} {change.before_ship} ship / {change.before_skip} skip → "
             f"{change.after_ship} ship / {change.after_skip} skip (first sent in {change.original_week})"
             for change in changes]
    origins = waiting_origins(session=session)
    return ChangesSummary(lines=lines, readers=readers_of(session=session, issue_ids=origins, now=now))


def monthly_summary(session, settings, *, now: datetime, pending: Sequence[ComparisonFacts], week: str
                    ) -> MonthlySummary | None:
    """The monthly email on its day: opened, or what opening it now would do — covering the week's issue too
    when it is not opened yet (``pending``: what it would claim; the scheduler opens it first). Another day:
    when the next one goes. None when nobody reads it and none is due today."""
    schedule, tz = settings.send_schedule, settings.tz
    today = month_of_day(now, schedule=schedule, tz=tz)
    if today is None:
        upcoming = next_month_slot(now, schedule=schedule, tz=tz)
        readers = monthly_readers(session=session, now=now)
        if upcoming is None or not readers:
            return None
        return MonthlySummary(label=upcoming.label, at=upcoming.at, today=False, readers=readers)
    issue = find_issue(session=session, week=today.label)
    if issue is not None:
        return MonthlySummary(label=today.label, at=today.at, today=True, opened=True,
                              readers=sum(status_counts(session=session, issue_id=issue.id).values()),
                              segments=segment_count(session=session, issue_id=issue.id),
                              covers=issue_weeks(session=session, ids=mail.listed_ids(issue.covers)))
    plan = plan_monthly(session=session, slot=today, now=now, pending=pending)
    covers = [label for _, label in plan.covers] + ([f"{week} (when it opens)"] if pending else [])
    return MonthlySummary(label=today.label, at=today.at, today=True, readers=plan.readers,
                          segments=len(plan.segments), covers=covers)
