"""Weeks as the store names them ("2026-W48") and as people write them, and when the schedule fires in one."""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta

from apscheduler.triggers.cron import CronTrigger

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
