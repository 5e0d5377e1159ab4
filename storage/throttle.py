"""The shared rate limit (digest.send.ratelimit): one row that says until when no sender posts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, select, text

from storage.models import SendThrottle
from storage.types import UTCDateTime


_BLOCK = text(
    "INSERT INTO send_throttle (id, blocked_until, reason) VALUES (1, :until, :reason) "
    "ON CONFLICT (id) DO UPDATE SET blocked_until = excluded.blocked_until, reason = excluded.reason "
    "WHERE send_throttle.blocked_until IS NULL OR send_throttle.blocked_until < excluded.blocked_until"
).bindparams(bindparam("until", type_=UTCDateTime()))


def block_sending(*, connection, until: datetime, reason: str) -> None:
    """No sender posts before ``until`` (a later time already recorded stands): one upserted row."""
    connection.execute(_BLOCK, {"until": until, "reason": reason})


def sending_blocked_until(*, connection) -> datetime | None:
    return connection.execute(select(SendThrottle.blocked_until).where(SendThrottle.id == 1)).scalar()


def record_block(*, engine, until: datetime, reason: str) -> None:
    """`block_sending` in a transaction of its own (a 429 is recorded as soon as it is seen)."""
    with engine.begin() as connection:
        block_sending(connection=connection, until=until, reason=reason)


def read_blocked_until(*, engine) -> datetime | None:
    """`sending_blocked_until` on a read-only connection: reading the limit takes no write lock."""
    with engine.connect().execution_options(read_only=True) as connection:
        until = sending_blocked_until(connection=connection)
        connection.rollback()
    return until
