"""The signup emails' own process, so that nothing the web process does tells who owns an address.

The web process used to look the address up, store a new one and send the email in a background task after
answering. On a keep-alive connection the next request waited for that send, so a stranger could tell an
active subscriber (an email goes out) from a bounced one (none) by timing the request after a signup: right
86 % of the time; and the signup itself took longer for an address never seen (benchmarks/signup_timing.py,
docs/reliability.md). Now the request only counts the signup and hands its `Letter` (what was typed, and
when) to `SignupMailer.hand_over`: one put on a queue, the same whoever owns the address. A child process
waits until a random moment within SPREAD_SECONDS, then does the rest (digest.subscribers.confirmation.answer): look
the address up, store it if new, render the email — "none" included — and send it unless it is "none".
The wait keeps that work's load on the machine away from the requests that follow the signup.

What a signup can count on:
- the letter is in the mailer's hands when `hand_over` returns, unless MAX_WAITING letters are already
  waiting (then it is dropped and logged: the person signs up again);
- a clean shutdown (`close`, from the app's lifespan) sends every waiting letter at once, without the wait;
- a web process killed outright loses the letters not yet written to the child's pipe (microseconds'
  worth); the child sends what it has and exits when its input ends;
- a child that died loses its waiting letters; the next signup logs how many and starts a new one.
A lost letter is a signup to make again: nothing was stored for it, not even a pending row.

The welcome a confirmation claims (digest.subscribers.welcome.Welcome, handed over by the confirm POST once
its transaction has committed) takes the same road and the same wait, and is sent by
digest.subscribers.welcome.send; a lost one is not sent again (its claim is stored: once means at most once).

Wire format, down the child's stdin: frames of a 4-byte big-endian length and a pickle — first
(settings, spread), then one `Letter` per signup (pickle: both ends are this package, on this machine). Up its stdout: one byte per letter dealt with. The child ignores SIGINT and SIGTERM (a
Ctrl-C or a process manager's stop reaches the whole process group) and ends when its input does.

A transport handed to the web app (tests of other pages) is used by a thread in this process instead:
the same letters and the same loop, without the protection of a separate process.

    python -m digest.subscribers.signup_mailer   # started only by SignupMailer
"""

from __future__ import annotations

import abc
import heapq
import logging
import os
import pickle
import queue
import random
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from digest.children import start_child
from digest.config import Settings
from digest.subscribers.confirmation import SignupRequest
from digest.subscribers.welcome import Welcome
from digest.transports.base import Transport

log = logging.getLogger("digest.web")

# Up to 2 s: the confirmation still arrives while the person looks at "check your inbox", and the send's
# few milliseconds of work land on one of ~2,000 possible milliseconds instead of on the next request.
SPREAD_SECONDS = 2.0
MAX_WAITING = 1000  # letters not yet written to the child (~400 bytes each): a stuck child costs 400 KB, no stall
RESTART_AFTER = 1.0  # seconds: a mailer that cannot start (a broken install) is not restarted per signup
_FRAME = struct.Struct(">I")


@dataclass(frozen=True)
class Letter:
    """One accepted signup, as the web process hands it over: what was typed (validated) and when."""

    signup: SignupRequest
    now: datetime


class SignupMailer:
    """``hand_over(letter)`` from the request path; ``wait_idle`` (tests, benchmarks); ``close`` at shutdown.

    With ``transport=None`` the child process builds its own from ``settings`` (production); with a
    transport, a thread of this process uses it (tests of other pages, which pass a recording transport).
    """

    def __init__(self, settings: Settings, *, transport: Transport | None = None,
                 spread_seconds: float = SPREAD_SECONDS):
        self._settings = settings
        self._transport = transport
        self._spread = spread_seconds
        self._lock = threading.Lock()
        self._worker: _Worker | None = None
        self._started_at = float("-inf")

    @property
    def pid(self) -> int | None:
        """The child's process id while one runs (for an operator's `ps`, and tests); None for a thread."""
        return self._worker.pid if self._worker is not None else None

    def hand_over(self, letter: Letter | Welcome) -> None:
        """Queue one letter; never waits for what it leads to."""
        with self._lock:
            if self._worker is None or not self._worker.alive():
                if self._worker is not None and self._worker.unsent():
                    log.error("signup mailer died with %d letters unsent", self._worker.unsent())
                if time.monotonic() - self._started_at < RESTART_AFTER:
                    log.error("signup dropped (no email, nothing stored): the signup mailer died less than "
                              "%.0f s after it started", RESTART_AFTER)
                    return
                self._started_at = time.monotonic()
                self._worker = _Thread(self._transport, self._settings, self._spread) if self._transport \
                    else _Child(self._settings, self._spread)
            if not self._worker.put(letter):
                log.error("signup dropped (no email, nothing stored): %d letters already wait for the signup "
                          "mailer", MAX_WAITING)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """True once every letter handed over has been dealt with (False after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while (worker := self._worker) is not None and worker.unsent():
            if time.monotonic() > deadline or not worker.alive():
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Send what waits, without the random wait, and stop the worker (killed after ``timeout`` seconds)."""
        with self._lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            worker.stop(timeout)


class _Worker(abc.ABC):
    """What SignupMailer needs of a worker: the letters go in; a count of those dealt with comes back."""

    pid: int | None = None

    def __init__(self):
        self.handed = 0
        self.handled = 0
        self._letters: queue.Queue = queue.Queue(MAX_WAITING)  # this process's side: never blocks a request

    def put(self, letter: Letter | Welcome) -> bool:
        try:
            self._letters.put_nowait(letter)
        except queue.Full:
            return False
        self.handed += 1
        return True

    def unsent(self) -> int:
        return self.handed - self.handled

    def done(self, count: int = 1) -> None:
        self.handled += count  # one thread adds: the child's reader, or the mailer thread

    @abc.abstractmethod
    def alive(self) -> bool:
        """Still able to take letters (the thread runs, the child has not exited)."""

    @abc.abstractmethod
    def stop(self, timeout: float) -> None:
        """Deal with every waiting letter at once, then end; waits up to ``timeout`` seconds."""


class _Thread(_Worker):
    def __init__(self, transport: Transport, settings: Settings, spread: float):
        super().__init__()
        self._thread = threading.Thread(target=lambda: run(self._letters.get, self.done, spread,
                                                           answerer(settings, transport)),
                                        name="signup-mailer", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float) -> None:
        self._letters.put(None)
        self._thread.join(timeout)


class _Child(_Worker):
    def __init__(self, settings: Settings, spread: float):
        super().__init__()
        self._process = start_child("digest.subscribers.signup_mailer")
        self.pid = self._process.pid
        self._letters.put_nowait((settings, spread))  # the first frame: not a letter, not counted
        self._feeder = threading.Thread(target=self._feed, name="signup-mailer-feed", daemon=True)
        self._feeder.start()
        threading.Thread(target=self._count, name="signup-mailer-count", daemon=True).start()

    def alive(self) -> bool:
        return self._process.poll() is None

    def stop(self, timeout: float) -> None:
        self._letters.put(None)  # the feeder closes the pipe after the last letter: the child sends the rest
        self._feeder.join(timeout)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.error("signup mailer: killed with %d letters unsent %.0f s after shutdown began",
                      self.unsent(), timeout)
            self._process.kill()
            self._process.wait()

    def _feed(self) -> None:
        pipe = self._process.stdin
        try:
            while (item := self._letters.get()) is not None:
                data = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
                pipe.write(_FRAME.pack(len(data)) + data)
                pipe.flush()
        except (BrokenPipeError, OSError):
            pass  # the child died: hand_over sees it and starts another
        finally:
            try:
                pipe.close()
            except OSError:
                pass

    def _count(self) -> None:
        while chunk := os.read(self._process.stdout.fileno(), 4096):
            self.done(len(chunk))


# -- the worker's side ---------------------------------------------------------------------------------------

def answerer(settings: Settings, transport: Transport) -> Callable[[Letter | Welcome], object]:
    """What the worker does with a letter: digest.subscribers.confirmation.answer, or for a `Welcome`
    digest.subscribers.welcome.send, with its own engine and templates."""
    from digest.render.environment import email_environment
    from digest.services import build_services
    from digest.subscribers import confirmation, welcome

    services, env = build_services(settings, transport=transport), email_environment()

    def answer(letter: Letter | Welcome) -> object:
        if isinstance(letter, Welcome):
            return welcome.send(services=services, env=env, letter=letter)
        return confirmation.answer(services=services, env=env, signup=letter.signup, now=letter.now)

    return answer


def run(get: Callable, done: Callable[[], None], spread: float, answer: Callable[[Letter], object]) -> None:
    """Take letters from ``get(timeout=…)``; answer each at a random moment within ``spread`` seconds,
    calling ``done()`` after each; a None answers the rest at once and ends."""
    rng = random.SystemRandom()
    waiting: list[tuple[float, int, Letter]] = []  # (when, arrival number, letter): a heap
    arrived = 0

    def deliver(letter: Letter) -> None:
        try:
            answer(letter)
        except Exception:  # noqa: BLE001 — nobody to raise to; the database stayed down for a minute
            log.exception("signup not answered")
        done()

    while True:
        try:
            letter = get(timeout=max(0.0, waiting[0][0] - time.monotonic()) if waiting else None)
        except queue.Empty:
            letter = _NOTHING
        if letter is None:
            for _, _, rest in sorted(waiting):
                deliver(rest)
            return
        if letter is not _NOTHING:
            heapq.heappush(waiting, (time.monotonic() + rng.uniform(0, spread), arrived, letter))
            arrived += 1
        while waiting and waiting[0][0] <= time.monotonic():
            deliver(heapq.heappop(waiting)[2])


_NOTHING = object()  # a get that timed out


def _read_frames(stream, letters: queue.Queue) -> None:
    """The child's reader: frames from stdin onto ``letters``; None once the input ends."""
    try:
        while header := stream.read(_FRAME.size):
            (size,) = _FRAME.unpack(header)
            letters.put(pickle.loads(stream.read(size)))
    finally:
        letters.put(None)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s signup-mailer: %(message)s")
    stdin = sys.stdin.buffer
    stdout = os.fdopen(os.dup(1), "wb")  # the counts' own pipe; a stray print() goes to stderr instead
    os.dup2(2, 1)
    (size,) = _FRAME.unpack(stdin.read(_FRAME.size))
    settings, spread = pickle.loads(stdin.read(size))
    from digest.transports import make_transport

    letters: queue.Queue = queue.Queue()
    threading.Thread(target=_read_frames, args=(stdin, letters), daemon=True).start()

    def done() -> None:
        stdout.write(b".")
        stdout.flush()

    run(letters.get, done, spread, answerer(settings, make_transport(settings)))


if __name__ == "__main__":
    main()
