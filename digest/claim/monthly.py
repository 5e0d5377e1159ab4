"""The monthly email (issue 19): when it is due, what it covers, who gets what, and opening it — one transaction.

A monthly reader gets no weekly issue. On the first scheduled day of each month they get one email: the best
of the weekly issues they skipped, ranked across those issues with the weekly ranking and capped with the
weekly cap. It is an issue like a week's (kind "monthly", labelled "2026-M12"), so the unique label opens it
once however many schedulers race, the unique (subscriber, issue) sends it once per reader, and the send
loop sends, resumes, pauses and cancels it as any other.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import TYPE_CHECKING

from digest.claim.selection import (
    ComparisonFacts,
    audience_label,
    rank,
    segment_key,
    visible_to,
)
from digest.claim.local_time import LOCAL_AHEAD, DueTimes, LocalSchedule, opens_at
from digest.claim.weeks import cron_trigger, iso_week
from storage.comparisons import claimed_comparisons
from storage.db import session_scope
from storage.faults import Conflict
from storage.issues import (
    add_segment,
    find_issue,
    refresh_delivery_statistics,
    segment_sizes,
)
from storage.models import Issue
from storage.monthly import (
    create_monthly_issue,
    fan_out_monthly,
    issue_of_comparisons,
    monthly_audience,
    weekly_issues_to_cover,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine

_LABEL = re.compile(r"(\d{4})-M(\d{2})")  # how the store names a month's email: "2026-M12" (8 characters, as a week)

MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")


# -- when -----------------------------------------------------------------------------------------------------

def month_label(year: int, month: int) -> str:
    return f"{year:04d}-M{month:02d}"


def is_month_label(label: str) -> bool:
    return _LABEL.fullmatch(label) is not None


def month_covered(label: str) -> str:
    """The month a monthly email is about, in words: the one before it goes out ("2026-M12" → "November 2026")."""
    year, month = int(label[:4]), int(label[6:])
    year, month = (year - 1, 12) if month == 1 else (year, month - 1)
    return f"{MONTHS[month - 1]} {year}"


def _months_after(year: int, month: int, steps: int) -> tuple[int, int]:
    index = year * 12 + month - 1 + steps
    return index // 12, index % 12 + 1


@dataclass(frozen=True)
class MonthSlot:
    """When a month's email is due: the schedule's first firing in that month, until its next firing (a
    scheduler down on the day catches up within the week, as the weekly catch-up does; later, the month's
    weekly issues roll into the next monthly email)."""

    label: str  # "2026-M12"
    at: datetime
    until: datetime | None  # None: the schedule never fires again
    since: datetime  # the weekly issues it covers were opened from here on: the previous month's first day

    def due(self, now: datetime) -> bool:
        return self.at <= now and (self.until is None or now < self.until)


def month_slot(year: int, month: int, *, schedule: str, tz) -> MonthSlot | None:
    """Month ``year``-``month``'s slot in ``tz``; None when the schedule does not fire in that month."""
    first = datetime.combine(date(year, month, 1), time.min, tzinfo=tz)
    trigger = cron_trigger(schedule, tz)
    fire = trigger.get_next_fire_time(None, first)
    if fire is None or (fire.year, fire.month) != (year, month):
        return None
    previous = _months_after(year, month, -1)
    return MonthSlot(label=month_label(year, month), at=fire, until=trigger.get_next_fire_time(fire, fire),
                     since=datetime.combine(date(*previous, 1), time.min, tzinfo=tz))


def due_month(now: datetime, *, schedule: str, tz) -> MonthSlot | None:
    """The month whose email is due at ``now``, or None. This month's, or last month's while its window (to
    the schedule's next firing) reaches into this one."""
    local = now.astimezone(tz)
    for year, month in (_months_after(local.year, local.month, 0), _months_after(local.year, local.month, -1)):
        found = month_slot(year, month, schedule=schedule, tz=tz)
        if found is not None and found.due(now):
            return found
    return None


def next_month_slot(now: datetime, *, schedule: str, tz) -> MonthSlot | None:
    """The next month's email not yet due at ``now`` (this month's when its slot is still ahead); None when
    the schedule fires in none of the next twelve months."""
    local = now.astimezone(tz)
    for steps in range(13):
        found = month_slot(*_months_after(local.year, local.month, steps), schedule=schedule, tz=tz)
        if found is not None and found.at > now:
            return found
    return None


def month_of_day(now: datetime, *, schedule: str, tz) -> MonthSlot | None:
    """The month whose email is due at ``now`` or later on ``now``'s day: what a dry run that day shows."""
    due = due_month(now, schedule=schedule, tz=tz)
    if due is not None:
        return due
    ahead = next_month_slot(now, schedule=schedule, tz=tz)
    if ahead is not None and ahead.at.astimezone(tz).date() == now.astimezone(tz).date():
        return ahead
    return None


# -- what and to whom (pure) ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class MonthSegment:
    """One distinct monthly email: what a group of readers sees, rendered once."""

    key: str
    comparison_ids: tuple[int, ...]  # in rank order, every one this group sees (shown + "more")
    audience: str
    readers: tuple[tuple[str, int], ...]  # (categories followed, bits of the covered issues they have)


def plan_month(ranked: Sequence[ComparisonFacts], *, issue_of: dict[int, int], covers: Sequence[int],
               audience: Iterable[tuple[str, int]]) -> list[MonthSegment]:
    """Group the readers by the email they get: what their categories see (the weekly rule) of the covered
    issues' comparisons, less the comparisons of the covered issues they have (bit k: ``covers[k]``) — a reader
    who turned monthly mid-month never gets a comparison twice. Readers left with nothing get no email.

    ``issue_of``: comparison id → its covered issue; a comparison in none (the week's issue not opened yet,
    as a dry run sees it) is one nobody has. As many segments as distinct contents, not as readers.
    """
    groups: dict[tuple[tuple[int, ...], str], list[tuple[str, int]]] = {}
    for categories, had in audience:
        have = {issue_id for bit, issue_id in enumerate(covers) if had >> bit & 1}
        ids = tuple(c.id for c in visible_to(ranked, categories) if issue_of.get(c.id) not in have)
        if ids:
            groups.setdefault((ids, audience_label(ranked, categories)), []).append((categories, had))
    return [MonthSegment(key=segment_key(ids, f"month|{label}"), comparison_ids=ids, audience=label,
                         readers=tuple(sorted(readers)))
            for (ids, label), readers in sorted(groups.items())]


# -- opening --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MonthPlan:
    """What opening the month's email now would do: read-only, for opening it and for `--dry-run`."""

    covers: list[tuple[int, str]]  # the weekly issues it covers: (id, label), oldest first
    ranked: list[ComparisonFacts]
    segments: list[MonthSegment]
    audience: dict[tuple[str, int], int]  # monthly readers by (categories, bits of covers they have)

    def size(self, segment: MonthSegment) -> int:
        return sum(self.audience.get(readers, 0) for readers in segment.readers)

    @property
    def readers(self) -> int:
        return sum(self.size(segment) for segment in self.segments)


def plan_monthly(*, session, slot: MonthSlot, now: datetime, pending: Sequence[ComparisonFacts] = ()) -> MonthPlan:
    """The plan of ``slot``'s email opened ``now``. ``pending``: what the week's issue, not opened yet, would
    claim (a dry run before the slot: the scheduler opens the week's issue first, and the month covers it)."""
    covers = weekly_issues_to_cover(session=session, since=slot.since, now=now)
    ids = [issue_id for issue_id, _ in covers]
    facts = [c for issue_id in ids for c in claimed_comparisons(session=session, issue_id=issue_id)]
    ranked = rank([*facts, *pending])
    audience = monthly_audience(session=session, now=now, covers=ids) if ranked else {}
    segments = plan_month(ranked, issue_of=issue_of_comparisons(session=session, issue_ids=ids), covers=ids,
                          audience=audience)
    return MonthPlan(covers=covers, ranked=ranked, segments=segments, audience=audience)


@dataclass
class MonthlyOpened:
    label: str | None  # the month due; None: none is
    issue: Issue | None = None
    created: bool = False
    covers: list[str] = field(default_factory=list)  # the weekly issues' labels
    deliveries: int = 0
    segments: int = 0
    reason: str = ""  # why nothing was opened, in words

    def sentence(self) -> str:
        if self.created:
            return (f"opened monthly issue {self.label} covering {', '.join(self.covers)}: {self.deliveries} monthly "
                    f"readers in {self.segments} segments")
        return self.reason


def open_monthly(*, engine: Engine, schedule: str, tz, now: datetime,
                 local: LocalSchedule | None = None) -> MonthlyOpened:
    """Open the month's email when it is due: create it, plan its segments, fan out — one transaction.

    Once per month: an existing one (a later tick, or another scheduler won the race) is returned as it is.
    Nothing to cover, or nobody with anything new: no issue. ``local`` (DIGEST_DELIVERY=local): it opens, as the
    week's issue does, a little before the month's first day comes in its first reader's zone, and each reader's
    email is due at the schedule's hour on that day in their own zone.
    """
    due = due_month(now + LOCAL_AHEAD if local is not None else now, schedule=schedule, tz=tz)
    if due is None:
        return MonthlyOpened(label=None, reason="no monthly email is due")
    try:
        with session_scope(engine) as session:
            existing = find_issue(session=session, week=due.label)
            if existing is not None:
                return MonthlyOpened(label=due.label, issue=existing, reason=f"monthly issue {due.label} already exists")
            times = None
            if local is not None:
                week = iso_week(due.at.astimezone(tz))
                opens = opens_at(local.due(session=session, week=week, now=now, cadence="monthly", at_once=False))
                if opens is not None and opens > now and due.at > now:
                    return MonthlyOpened(label=None, reason=f"monthly issue {due.label} is not due yet (it opens "
                                                            f"{opens:%a %d %b %H:%M %Z})")
                times = local.due(session=session, week=week, now=now, cadence="monthly")
            plan = plan_monthly(session=session, slot=due, now=now)
            if not plan.covers:
                return MonthlyOpened(label=due.label, reason=f"no weekly issue went out since the last monthly email: "
                                                             f"no monthly email {due.label}")
            if not plan.segments:
                return MonthlyOpened(label=due.label, reason=f"no monthly reader has anything new in "
                                                             f"{', '.join(week for _, week in plan.covers)}: "
                                                             f"no monthly email {due.label}")
            issue = _fan_out(session, label=due.label, plan=plan, now=now, due=times)
            return MonthlyOpened(label=due.label, issue=issue, created=True, segments=len(plan.segments),
                                 covers=[week for _, week in plan.covers],
                                 deliveries=sum(segment_sizes(session=session, issue_id=issue.id).values()))
    except Conflict:
        with session_scope(engine) as session:
            existing = find_issue(session=session, week=due.label)
        if existing is None:
            raise
        return MonthlyOpened(label=due.label, issue=existing, reason=f"monthly issue {due.label} already exists")


def _fan_out(session, *, label: str, plan: MonthPlan, now: datetime, due: DueTimes | None) -> Issue:
    ids = [issue_id for issue_id, _ in plan.covers]
    issue = create_monthly_issue(session=session, label=label, now=now, covers=ids)  # a racing process fails here
    targets: dict[tuple[str, int], int] = {}
    segments = []
    for planned in plan.segments:
        segment = add_segment(session=session, issue_id=issue.id, key=planned.key, audience=planned.audience,
                              comparison_ids=planned.comparison_ids)
        targets.update((readers, segment.id) for readers in planned.readers)
        segments.append(segment)
    fan_out_monthly(session=session, issue_id=issue.id, covers=ids, now=now, segments=targets, due=due)
    sizes = segment_sizes(session=session, issue_id=issue.id)
    for segment in segments:
        segment.size = sizes.get(segment.id, 0)
    refresh_delivery_statistics(session=session)
    issue.fanned_out_at = now
    if not sizes:
        issue.completed_at = now  # the readers planned left before the insert: nobody to send to, done
    return issue
