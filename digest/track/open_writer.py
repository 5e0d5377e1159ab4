"""The pixel's writer: a child process of each web process that records opens in group commits.

A pixel fetch is answered once its open is in the pipe to the writer: in the kernel, not in the web
process's memory, so a `kill -9` of the web process loses no open it answered. The writer commits it a
few milliseconds later, with every other open that arrived meanwhile, in one transaction. The web process
does none of the database work: a writer *thread* shared its GIL with the event loop, and each of its
half-dozen returns from SQLite waited for the loop to let go, so the loop sat idle a third of the time
waiting for commits (py-spy, benchmarks/tracking.py, docs/benchmarks.md).

What an answered fetch can count on:
- the web process crashing loses nothing: each open is written to the pipe before its GIF goes out, and
  the writer reads its pipe to the end, commits it and exits (even with nobody left to confirm to);
- a clean shutdown (the app's lifespan) waits until the writer has committed everything it was sent;
- only the writer itself dying loses the opens it had not yet committed (at most MAX_UNCONFIRMED; the web
  process logs how many and starts a new writer);
- a full pipe (the writer still importing, or a burst) holds the fetches back until their opens are in
  it: the pipe is grown to PIPE_BYTES so that a start-up burst fits;
- a database that stalls slows the pixel instead of filling memory: with MAX_UNCONFIRMED opens not yet
  confirmed, the next fetches wait for the writer.

Wire format, both ways: frames of a 4-byte big-endian length and a `marshal` dump (plain values only: the
child rebuilds nothing but ints, strings and floats). Down, one frame per open, written whole by one
`os.write` when the pipe has room: (the RecipientRef's fields in order, the user agent cut to AGENT_CHARS
or None, now as a POSIX timestamp: exact to the microsecond). Up, per transaction: (opens in it, None or
the text of the error that rolled it back).

The child, `python -m digest.track.open_writer_child`, ignores SIGINT and SIGTERM and exits when its input ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import marshal
import operator
import os
import subprocess
import time
from collections import deque
from collections.abc import Awaitable, Iterator
from datetime import datetime

from digest.children import start_child
from digest.links import RecipientRef

log = logging.getLogger("digest.web")

URL_VARIABLE = "DIGEST_OPEN_WRITER_URL"
WINDOW_VARIABLE = "DIGEST_OPEN_WRITER_WINDOW"
MAX_BATCH = 1000  # opens per transaction: bounds one transaction's time after a burst queued up
MAX_UNCONFIRMED = 10_000  # opens handed over and not yet committed, before fetches wait (~3 MB)
RESTART_AFTER = 1.0  # seconds between starts: a writer that cannot start is not restarted in a tight loop
FAILURES_LOGGED_EVERY = 10.0  # seconds
# More than the store keeps (digest.track.opens.USER_AGENT_CHARS: 300); keeps a frame (≤ ~1.1 KB) under
# PIPE_BUF, 4096 bytes, so that one os.write puts it in the pipe whole or not at all, and bounds what a
# held-back fetch holds.
AGENT_CHARS = 512
# Linux's default pipe is 64 KiB (~550 opens of a typical agent, ~115 bytes each); 1 MiB (fs.pipe-max-size's
# default) holds ~9,000: half a second of one web process at full speed, while its writer imports (1.3-2 s
# on 2 busy cores; past that, fetches wait until the writer reads).
PIPE_BYTES = 1 << 20
# A recipient travels as its fields in order, whatever they are (attrgetter: 30x dataclasses.astuple's speed).
_recipient_fields = operator.attrgetter(*(field.name for field in dataclasses.fields(RecipientRef)))


class OpenWriter:
    """The web process's end. ``await writer.record(...)`` puts one open in the pipe to the child (started
    by the first: opens that arrive while it imports wait in the pipe); ``await writer.settled()`` returns
    once everything handed over is committed (or failed, logged); ``await writer.close()`` at shutdown.

    No thread: the pipes are non-blocking and watched by the event loop the writer was last used on (a
    test client may run each request on a loop of its own; a new loop gets a new writer).
    """

    def __init__(self, *, database_url: str, window_seconds: float, max_unconfirmed: int = MAX_UNCONFIRMED):
        self._url = database_url
        self._window = window_seconds
        self._max_unconfirmed = max_unconfirmed
        self.loop: asyncio.AbstractEventLoop | None = None
        self._process: subprocess.Popen | None = None
        self._retired: list[subprocess.Popen] = []  # writers let go with their loop, finishing on their own
        self._unsent = bytearray()  # frames the pipe had no room for yet, in order
        self._queued = self._drained = 0  # bytes ever put in `_unsent`, and written from it
        self._held: deque[tuple[int, asyncio.Future]] = deque()  # (end of its frame in `_queued`, its fetch)
        self._received = bytearray()
        self._unconfirmed = 0
        self._waiters: list[asyncio.Future] = []  # fetches held back, and `settled` calls
        self._started_at = float("-inf")
        self._dropped = 0  # opens while a dead writer was not restarted yet
        self._failures = 0  # opens the database refused, not logged yet
        self._last_failure = ""
        self._failure_logged_at = float("-inf")

    @property
    def pid(self) -> int | None:
        """The running child's process id (for an operator's `ps`, and tests), or None."""
        return self._process.pid if self._process is not None else None

    async def record(self, recipient: RecipientRef, user_agent: str | None, now: datetime) -> None:
        """Hand one open to the writer: returns once it is in the pipe (at once, unless the pipe is full),
        and then only once fewer than MAX_UNCONFIRMED opens await the writer's confirmation. While a writer
        that died is not yet restarted (RESTART_AFTER), opens are counted and the count logged at the restart.
        """
        waiting = self.hand_over(recipient, user_agent, now)
        if waiting is not None:
            await waiting

    def hand_over(self, recipient: RecipientRef, user_agent: str | None, now: datetime) -> Awaitable[None] | None:
        """`record` up to its first wait, without one: None when the open is in the pipe and nothing holds the
        fetch back (nearly always); else what to await before answering. On the event loop's thread."""
        loop = asyncio.get_running_loop()
        if (self._process is None or loop is not self.loop) and not self._start(loop):
            self._dropped += 1
            return None
        self._unconfirmed += 1
        written = self._put(encode(recipient, user_agent, now))
        if written is None and self._unconfirmed <= self._max_unconfirmed:
            return None
        return self._held_back(written)

    async def _held_back(self, written: asyncio.Future | None) -> None:
        if written is not None:
            await written
        while self._unconfirmed > self._max_unconfirmed and self._process is not None:
            await self._wait()

    async def settled(self) -> None:
        """Once every open handed over so far is committed, or its failure logged."""
        while self._unconfirmed and self._process is not None:
            await self._wait()

    async def close(self, timeout: float = 30.0) -> None:
        """The app's shutdown: the child commits what it was sent and exits; waits up to ``timeout``."""
        if self._process is not None:
            try:
                await asyncio.wait_for(self.settled(), timeout)
            except asyncio.TimeoutError:
                log.error("open writer: killed with %d opens unconfirmed %.0f s after shutdown began",
                          self._unconfirmed, timeout)
                if self._process is not None:
                    self._process.kill()
            self._stop()
        for retired in self._retired:
            retired.wait()
        self._retired.clear()
        if self._failures:
            self._log_failures()

    # -- the web process's side of the pipes ----------------------------------------------------------------

    def _start(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Start a child for ``loop``; False while a writer that died moments ago waits out RESTART_AFTER."""
        if self._process is not None:
            self._stop()  # started on another loop, now gone: it finishes what it has on its own
        self._retired = [process for process in self._retired if process.poll() is None]
        if time.monotonic() - self._started_at < RESTART_AFTER and self.loop is loop:
            return False
        self._started_at = time.monotonic()
        if self._dropped:
            log.error("open pixel: %d opens not recorded while the open writer was down", self._dropped)
            self._dropped = 0
        self._process = start_child("digest.track.open_writer_child", **{URL_VARIABLE: self._url,
                                                                   WINDOW_VARIABLE: repr(self._window)})
        down = self._process.stdin.fileno()
        if hasattr(fcntl, "F_SETPIPE_SZ"):  # Linux; elsewhere the pipe keeps its size, fetches wait sooner
            with contextlib.suppress(OSError):  # a lower fs.pipe-max-size: the same
                fcntl.fcntl(down, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        os.set_blocking(down, False)
        os.set_blocking(self._process.stdout.fileno(), False)
        self.loop = loop
        loop.add_reader(self._process.stdout.fileno(), self._read)
        return True

    def _put(self, frame: bytes) -> asyncio.Future | None:
        """Write ``frame`` to the pipe now if it has room (None); else queue it behind the frames already
        waiting and return a future that is done once it is written (or the child is gone)."""
        if not self._unsent:
            try:
                written = os.write(self._process.stdin.fileno(), frame)
            except BlockingIOError:
                written = 0
            except OSError:  # the child is gone; the end of its output tells `_read`
                return None
            if written == len(frame):
                return None
            frame = frame[written:]
            self.loop.add_writer(self._process.stdin.fileno(), self._write)
        self._unsent += frame
        self._queued += len(frame)
        done = self.loop.create_future()
        self._held.append((self._queued, done))
        return done

    def _write(self) -> None:
        fd = self._process.stdin.fileno()
        try:
            written = os.write(fd, self._unsent)
        except BlockingIOError:
            return
        except OSError:  # the child is gone; the end of its output tells `_read`
            written = len(self._unsent)
        del self._unsent[:written]
        self._drained += written
        while self._held and self._held[0][0] <= self._drained:
            _done(self._held.popleft()[1])
        if not self._unsent:
            self.loop.remove_writer(fd)

    def _read(self) -> None:
        try:
            chunk = os.read(self._process.stdout.fileno(), 1 << 16)
        except BlockingIOError:
            return
        if not chunk:  # it exited, unasked
            process, lost = self._process, self._unconfirmed
            self._stop()
            log.error("open writer: exited (code %s); %d opens it had not confirmed may be lost",
                      process.wait(), lost)
            return
        self._received += chunk
        for frame in frames(self._received):
            count, error = marshal.loads(frame)
            self._unconfirmed -= count
            if error is not None:
                self._failed(count, error)
        self._wake()

    def _failed(self, count: int, error: str) -> None:
        """Log opens the database refused: at once, then at most every FAILURES_LOGGED_EVERY seconds with
        the count since (a broken database under load fails hundreds of transactions a second)."""
        self._failures += count
        self._last_failure = error
        if time.monotonic() - self._failure_logged_at >= FAILURES_LOGGED_EVERY:
            self._log_failures()

    def _log_failures(self) -> None:
        log.error("open pixel: could not record %d opens: %s", self._failures, self._last_failure)
        self._failures, self._failure_logged_at = 0, time.monotonic()

    def _wait(self) -> asyncio.Future:
        waiter = self.loop.create_future()
        self._waiters.append(waiter)
        return waiter

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            _done(waiter)

    def _stop(self) -> None:
        """Let the child go: its input ends, so it commits what it has and exits on its own."""
        process, self._process = self._process, None
        if process is None:
            return
        if not self.loop.is_closed():
            self.loop.remove_reader(process.stdout.fileno())
            self.loop.remove_writer(process.stdin.fileno())
        if self._unsent:  # a loop that is gone could not send these yet
            os.set_blocking(process.stdin.fileno(), True)
            try:
                write_all(process.stdin.fileno(), self._unsent)
            except OSError:
                pass
        self._unsent.clear()
        self._queued = self._drained = 0
        for _, held in self._held:
            _done(held)
        self._held.clear()
        self._received.clear()
        process.stdin.close()
        process.stdout.close()
        self._retired.append(process)
        self._unconfirmed = 0
        self._wake()


def encode(recipient: RecipientRef, user_agent: str | None, now: datetime) -> bytes:
    """One open's frame down the pipe (see the wire format above)."""
    body = marshal.dumps((_recipient_fields(recipient), user_agent and user_agent[:AGENT_CHARS], now.timestamp()))
    return len(body).to_bytes(4, "big") + body


def _done(future: asyncio.Future) -> None:
    if not future.done() and not future.get_loop().is_closed():
        future.set_result(None)


def frames(buffer: bytearray) -> Iterator[bytes]:
    """Take the complete frames off the front of ``buffer`` (in place); a partial one stays."""
    start = 0
    while len(buffer) - start >= 4:
        size = int.from_bytes(buffer[start:start + 4], "big")
        if len(buffer) - start - 4 < size:
            break
        yield bytes(buffer[start + 4:start + 4 + size])
        start += 4 + size
    del buffer[:start]


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
