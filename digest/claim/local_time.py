"""Delivery at each reader's own hour (DIGEST_DELIVERY=local, issue 19).

The week's issue opens once, a little before the first reader's hour comes anywhere; each delivery is then
due at the schedule's weekday and time in its reader's zone (Thursday 09:00 in Auckland, Thursday 09:00 in
Berlin), computed by the same cron rule that times the global send, so a zone's daylight-saving change is
the zone's business, not ours. A reader whose hour has already passed when the issue opens is due at once.

The fan-out writes each delivery's due time in its one INSERT: the few hundred zones readers live in are
timed here, in Python, and go into the statement as one CASE over ``subscriber.timezone`` (storage.due).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from digest.claim.weeks import slot
from digest.subscribers.zones import UnknownZone, checked_zone

# The issue opens this long before the first reader's hour: the scheduler's hourly catch-up is never late for it.
OPEN_LEAD = timedelta(hours=2)
# How far ahead of DIGEST_TIMEZONE a reader's clock can be (UTC-12 to UTC+14), plus the opening's lead: the
# scheduler looks this far ahead for an issue whose first readers may be due.
LOCAL_AHEAD = timedelta(hours=28)


@dataclass(frozen=True)
class DueTimes:
    """When an issue is due for the readers of each zone; ``default`` for readers with no (usable) zone.
    A time that had passed when the issue opened is None: due at once."""

    default: datetime | None
    by_zone: dict[str, datetime | None]

    @property
    def first(self) -> datetime | None:
        """The earliest due time still to come (None when every reader's hour has passed)."""
        times = [t for t in (self.default, *self.by_zone.values()) if t is not None]
        return min(times, default=None)

    def of(self, zone: str | None) -> datetime | None:
        return self.by_zone.get(zone, self.default) if zone else self.default


def due_times(*, week: str, schedule: str, default_zone: str, zones: Iterable[str | None],
              now: datetime | None = None) -> DueTimes:
    """When issue ``week`` is due in each of ``zones`` (the schedule's weekday and time there, in that zone's
    own calendar week ``week``); with ``now``, a time already past is None (at once). A zone the schedule
    never fires in that week (a crontab without that week's day) is due with the default zone."""
    def due(zone: ZoneInfo) -> datetime | None:
        # In UTC: an hour a clock change repeats compares as its first occurrence, not as unequal to everything.
        fire = slot(week, schedule=schedule, tz=zone)
        return None if fire is None else fire.astimezone(timezone.utc)

    default = due(ZoneInfo(default_zone))
    by_zone = {}
    for name in sorted({zone for zone in zones if zone}):  # in one order, whatever the set's hashing
        try:
            zone = checked_zone(name)
        except UnknownZone:
            continue  # never stored (checked where it comes in); should one be, its reader gets the default
        by_zone[name] = due(ZoneInfo(zone)) or default
    if now is not None:
        default = default if default is not None and default > now else None
        by_zone = {name: (t if t is not None and t > now else None) for name, t in by_zone.items()}
    return DueTimes(default=default, by_zone=by_zone)


def opens_at(times: DueTimes) -> datetime | None:
    """When the scheduler opens an issue delivered at local time: ``OPEN_LEAD`` before its first reader's hour."""
    first = times.first
    return None if first is None else first - OPEN_LEAD


def send_at(due: datetime | None, now: datetime) -> datetime | None:
    """The time a batch due at ``due`` asks the provider to hold it until; None: send now."""
    return due if due is not None and due > now else None


@dataclass(frozen=True)
class LocalSchedule:
    """The schedule a local-time issue is timed by: DIGEST_SEND_SCHEDULE, and DIGEST_TIMEZONE for readers with
    no zone of their own."""

    cron: str
    default_zone: str

    @classmethod
    def of(cls, settings) -> LocalSchedule | None:
        """The settings' schedule when DIGEST_DELIVERY=local, else None (everyone at once)."""
        return cls(settings.send_schedule, settings.timezone) if settings.delivery == "local" else None

    def due(self, *, session, week: str, now: datetime, cadence: str = "weekly", at_once: bool = True) -> DueTimes:
        """When issue ``week`` is due for each zone its audience of ``cadence`` lives in (read in ``session``);
        ``at_once``: a time already past at ``now`` is None (due at once)."""
        from storage.issues import audience_zones

        zones = audience_zones(session=session, now=now, cadence=cadence)
        return due_times(week=week, schedule=self.cron, default_zone=self.default_zone, zones=zones,
                         now=now if at_once else None)
