"""A provider rate limit shared by every sender: one "blocked until" row in the database.

SendGrid answers 429 with `X-RateLimit-Reset` (epoch seconds) to the one request that went over; the
other workers would each find out with a 429 of their own. `SharedRateLimit` wraps a transport: a 429
writes the reset time to the `send_throttle` row, and every send, in any process, first waits until
that time has passed.

The sender reads the row in the transaction that claims each batch and hands it over (`observe`), so a
batch costs no transaction of its own for it; a send without a fresh reading (a retry, another caller)
reads the row itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from digest.transports.base import Batch, RateLimited, SendResult, Transport
from storage.db import retrying
from storage.throttle import read_blocked_until, record_block, sending_blocked_until
from storage.types import utcnow

if TYPE_CHECKING:
    from sqlalchemy import Engine

log = logging.getLogger("digest.ratelimit")

MAX_SHARED_WAIT = 900.0  # seconds; the same cap as the sender's own wait (send.RATE_LIMIT_MAX_WAIT)
# How old a reading handed over by `observe` may be and still stand for the next send: a batch is built
# and posted within milliseconds of its claim; anything older is read again.
OBSERVED_FOR = 1.0  # seconds


class SharedRateLimit:
    """See `Transport`. Waits out a rate limit any sender recorded; records the ones this one meets."""

    def __init__(self, inner: Transport, *, engine: Engine, clock: Callable[[], datetime] = utcnow,
                 sleep: Callable[[float], None] = time.sleep, db_retry_seconds: float = 120.0):
        self.inner = inner
        self._db_retry_seconds = db_retry_seconds  # a database outage is waited out, as the sender's are
        self.name = inner.name
        self._engine = engine
        self._clock = clock
        self._sleep = sleep
        self.waited = 0.0  # seconds spent waiting for a limit another sender (or this one) recorded
        self.waits = 0
        self._observed: tuple[datetime | None, float] | None = None  # (blocked until, when read: monotonic)

    def send(self, batch: Batch) -> SendResult:
        """See `Transport`."""
        self.wait_if_blocked()
        try:
            return self.inner.send(batch)
        except RateLimited as exc:
            if exc.reset_at is not None:
                until, reason = datetime.fromtimestamp(exc.reset_at, timezone.utc), str(exc)[:200]
                self._retrying(lambda: self._block(until, reason))
            raise

    def _block(self, until: datetime, reason: str) -> None:
        record_block(engine=self._engine, until=until, reason=reason)

    def _blocked_until(self) -> datetime | None:
        return read_blocked_until(engine=self._engine)

    def _retrying(self, work):
        return retrying(work, budget=self._db_retry_seconds, sleep=self._sleep)

    def observe(self, connection) -> None:
        """Read the shared limit on the caller's ``connection`` (its own transaction) for the next send only."""
        self._observed = (sending_blocked_until(connection=connection), time.monotonic())

    def wait_if_blocked(self) -> None:
        observed, self._observed = self._observed, None
        if observed is not None and time.monotonic() - observed[1] <= OBSERVED_FOR:
            until = observed[0]
        else:
            until = self._retrying(self._blocked_until)
        if until is None:
            return
        delay = (until - self._clock()).total_seconds()
        if 0 < delay <= MAX_SHARED_WAIT:  # further away: the sender's own 429 handling gives up
            log.info("rate limited by the provider until %s: waiting %.1f s", until.isoformat(), delay)
            self.waits += 1
            self.waited += delay
            self._sleep(delay)

    @property
    def schedule_ahead(self):
        """See `Transport`."""
        return self.inner.schedule_ahead

    def new_batch_id(self) -> str:
        """See `Transport`. (A rate limit is per Mail Send request: the batch endpoints do not wait for it.)"""
        return self.inner.new_batch_id()

    def hold_scheduled(self, batch_id: str, status: str, *, change: bool = False) -> bool:
        """See `Transport`."""
        return self.inner.hold_scheduled(batch_id, status, change=change)

    def release_scheduled(self, batch_id: str) -> bool:
        """See `Transport`."""
        return self.inner.release_scheduled(batch_id)

    def close(self) -> None:
        """See `Transport`."""
        self.inner.close()
