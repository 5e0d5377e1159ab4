"""Warm-up of a new sending domain (issue 18, item 5): how many emails a day may go out, from
DIGEST_WARMUP_START on.

Mailbox providers judge a new domain by how its first weeks go: a sudden million emails from a name they
have never seen looks like a spammer's burst. Volume that grows day by day, to readers who open, builds
the reputation instead. The ramp roughly doubles each day for the first week, then grows by about half
each day (the pace ESPs' warm-up guides give), and ends after RAMP: from then on there is no limit.

An issue larger than the day's allowance simply stops for the day (SendReport.halted says why) and the
scheduler's hourly catch-up sends the rest as each new day's allowance opens; the claim's exactly-once
rules hold across days as they do across runs. Readers are fanned out most engaged first
(storage.issues.fan_out_segments), so the first days go to readers who open.
"""

from __future__ import annotations

from datetime import date, datetime

# Sends allowed on day 1, 2, … of the warm-up; after the last day, no limit.
RAMP = (1_000, 2_000, 4_000, 8_000, 15_000, 25_000, 40_000, 60_000, 90_000, 130_000, 190_000, 270_000,
        380_000, 530_000, 750_000, 1_000_000)


def allowance(*, start: date | None, today: date) -> int | None:
    """Today's allowance of sends, or None when there is no limit (no warm-up, or it is over). Before the
    start day the first day's allowance applies: the domain is new."""
    if start is None:
        return None
    day = (today - start).days
    if day >= len(RAMP):
        return None
    return RAMP[max(day, 0)]


def warmup_day(settings, now: datetime) -> tuple[str, int] | None:
    """(today as the store names it, today's allowance) while the warm-up limits sends, else None."""
    today = now.astimezone(settings.tz).date()
    limit = allowance(start=settings.warmup_start, today=today)
    return None if limit is None else (today.isoformat(), limit)
