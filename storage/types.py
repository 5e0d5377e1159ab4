"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import DateTime
from sqlalchemy.types import TypeDecorator


class UTCDateTime(TypeDecorator):
    """Timezone-aware datetimes in, stored as naive UTC, aware UTC out.

    SQLite has no time zones, so storing naive UTC everywhere keeps comparisons in SQL the same on both
    databases.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware datetime")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def utc_column(**kwargs):
    """A timezone-aware UTC datetime column (UTCDateTime) with ``kwargs``, for a SQLModel ``sa_column``."""
    from sqlalchemy import Column

    return Column(UTCDateTime(), **kwargs)
