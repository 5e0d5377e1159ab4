"""How the webhook reaches the store: posts applied on threads of their own, a bounded number waiting, each
waiting a bounded time (DIGEST_WEBHOOK_BUSY_SECONDS). Past either bound the answer is 503 with Retry-After,
at once or within those seconds: SendGrid retries a 5xx for 24 hours, while a post held until its client
times out costs both sides a connection and tells SendGrid nothing.

A post whose wait runs out before its transaction began is not applied at all; one already in its
transaction is let finish (a commit cannot be called back), and SendGrid's retry then finds its events
stored: duplicates, applied once. Either way a 2xx is only ever answered after the commit.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from storage.db import TRANSIENT_DB_ERRORS
from storage.faults import is_transient

T = TypeVar("T")
log = logging.getLogger("digest.web")

# Threads applying posts, per web process. SQLite takes one writer at a time, so one; on PostgreSQL a post's
# statements wait for their round trips, and a second thread fills those waits. Four (as WebContext.write has)
# read 11,400 events/s on one worker but 0.80-0.85x that on two; two threads 10,200 and 1.06-1.11x
# (benchmarks/webhook.py, load 5-7).
THREADS = {"sqlite": 1, "postgresql": 2}
# Posts admitted per process (applying or waiting): each holds its parsed events (~2 MB for 1,000), so memory
# stays bounded whatever the number of SendGrid's connections; past it, 503 before the body is read.
MAX_ADMITTED = 16
RETRY_AFTER_SECONDS = 30


class StoreBusy(Exception):
    """The post was not applied in time, or the store is unavailable: answer 503, SendGrid retries."""


class WebhookStore:
    def __init__(self, *, dialect: str, busy_seconds: float):
        # The service runs on these two databases only (storage.db.make_engine); named for an operator's thread dump.
        self._executor = ThreadPoolExecutor(max_workers=THREADS[dialect], thread_name_prefix="digest-webhook")
        self._busy_seconds = busy_seconds
        self._admitted = 0

    def admit(self) -> bool:
        """Take a place for a post; False when MAX_ADMITTED are in: answer 503 without reading it."""
        if self._admitted >= MAX_ADMITTED:
            return False
        self._admitted += 1
        return True

    def leave(self) -> None:
        self._admitted -= 1

    async def apply(self, work: Callable[..., T], *args) -> T:
        """``work(*args)`` on the webhook's threads, within the bound; `StoreBusy` past it or while the store
        is unavailable (a transient database error: a lock held past its timeout, a server restarting)."""
        future = asyncio.get_running_loop().run_in_executor(self._executor, work, *args)
        try:
            return await asyncio.wait_for(future, self._busy_seconds)  # cancels it if it has not started
        except TimeoutError:
            log.warning("SendGrid webhook post answered 503: not applied within %.1f s (DIGEST_WEBHOOK_BUSY_SECONDS)",
                        self._busy_seconds)
            raise StoreBusy() from None
        except TRANSIENT_DB_ERRORS as error:
            if not is_transient(error):
                raise
            log.warning("SendGrid webhook post answered 503: database unavailable (%s)",
                        str(error).splitlines()[0][:200])
            raise StoreBusy() from error

    def close(self) -> None:
        self._executor.shutdown(wait=True)
