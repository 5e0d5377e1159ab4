"""Readers' time zones (issue 19): IANA names, checked wherever one comes in (signup, the CSV import, the
preference centre), so the fan-out never meets a name it cannot use."""

from __future__ import annotations

import functools
import zoneinfo
from zoneinfo import ZoneInfo

MAX_LENGTH = 64  # subscriber.timezone; the longest IANA name is 32 characters


class UnknownZone(ValueError):
    """Not an IANA time zone name; the message quotes it (shortened) and says what to write."""


@functools.cache
def choices() -> tuple[str, ...]:
    """The zones a reader may pick, sorted: "Area/City" names and UTC (not the legacy aliases such as "EST5EDT"
    or "US/Pacific", which a browser never reports)."""
    names = {name for name in zoneinfo.available_timezones()
             if "/" in name and not name.startswith(("Etc/", "SystemV/", "US/", "posix/", "right/"))}
    return tuple(sorted(names | {"UTC"}))


def checked_zone(name: str | None) -> str | None:
    """``name`` as stored: None for blank, the name itself when zoneinfo knows it; UnknownZone otherwise."""
    name = (name or "").strip()
    if not name:
        return None
    if len(name) > MAX_LENGTH or name.startswith(("/", ".")) or ".." in name:
        raise UnknownZone(f"unknown time zone {name[:40]!r}: use an IANA name such as Europe/Berlin")
    try:
        ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise UnknownZone(f"unknown time zone {name[:40]!r}: use an IANA name such as Europe/Berlin") from exc
    return name


def zone_or_default(name: str | None, default: str) -> ZoneInfo:
    """The zone a reader's email is timed in: theirs when it is usable, else the default (DIGEST_TIMEZONE)."""
    try:
        return ZoneInfo(checked_zone(name) or default)
    except UnknownZone:
        return ZoneInfo(default)
