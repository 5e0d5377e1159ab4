"""`digest worker`: a long-running sender for scale-out on PostgreSQL.

A worker opens no issue (the scheduler does); it sends what is pending in every unfinished issue, side
by side with any number of other workers and schedulers. What keeps them apart is in the database:
- `claim_batch` leases rows with SELECT … FOR UPDATE SKIP LOCKED, so two workers never take the same row,
  and a leased row belongs to its worker until the lease (DIGEST_LEASE_SECONDS) runs out — a worker that
  dies or hangs loses its rows to the others then (at once when it died on this host);
- a 429 is recorded in one row that every worker reads before posting (digest.send.ratelimit);
- each segment is rendered once per process (the sender's cache), not once per batch.

SIGTERM or Ctrl-C: the batch in flight is finished and recorded, then the worker exits.

A paused issue is passed over until `digest issue resume` (a worker never lifts a pause), and said once per
pause in the log; a pause or a cancel while the worker sends an issue stops it after the batch in flight (issue 18).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime

from digest.send.loop import SendAborted, Sender, SendReport
from digest.services import Services
from digest.track.stats import IssueState
from storage.issues import paused_issues, unfinished_issues

log = logging.getLogger("digest.worker")

ABORT_PAUSE_SECONDS = 30.0  # after the provider kept failing on a batch: the next try is not at once


@dataclass
class WorkerReport:
    sent: int = 0
    failed: int = 0
    batches: int = 0
    rate_limited: int = 0
    ambiguous: int = 0  # recipients handed over again after an unknown outcome (possible duplicates)
    shared_waits: int = 0  # times this worker waited out a 429 that another sender recorded
    errors: list[str] = field(default_factory=list)
    issues: set[str] = field(default_factory=set)

    def add(self, report: SendReport) -> None:
        self.sent += report.sent
        self.failed += report.failed
        self.batches += report.batches
        self.rate_limited += report.rate_limited
        self.ambiguous += report.ambiguous
        self.errors += report.errors
        if report.sent or report.failed:
            self.issues.add(report.week)


class Worker:
    """Drains unfinished issues through one `Sender` until stopped (or, with ``once``, until idle)."""

    def __init__(self, *, services: Services, sender: Sender, idle_seconds: float):
        self.services = services
        self.sender = sender
        self.idle_seconds = idle_seconds
        self.report = WorkerReport()
        self._said: set[tuple[str, object]] = set()  # (week, paused at) of the pauses already in the log
        # Issues delivered at local time (issue 19) with nothing left to hand over before this time: not looked at
        # again until then, rather than every DIGEST_WORKER_IDLE_SECONDS.
        self._later: dict[int, datetime] = {}
        self._stop = threading.Event()
        sender.should_stop = self._stop.is_set  # checked between batches: the one in flight finishes

    def stop(self, *_signal) -> None:
        """Finish the batch in flight, then return from `run` (a signal handler)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run(self, *, once: bool = False) -> WorkerReport:
        """Send until stopped; with ``once``, until a pass finds nothing this worker can take."""
        while not self.stopping:
            try:
                busy = self.drain()
            except SendAborted as exc:
                log.error("%s", exc)
                if once:
                    break
                self._stop.wait(ABORT_PAUSE_SECONDS)
                continue
            if once and not busy:
                break
            if not busy:
                self._stop.wait(self.idle_seconds)
        self.report.shared_waits = self.services.transport.waits
        return self.report

    def drain(self) -> bool:
        """One pass over every unfinished issue; True when this worker sent (or refused) something."""
        issues, paused = self.services.transaction(
            lambda session: (unfinished_issues(session=session), paused_issues(session=session)))
        self._say_paused(paused)
        before = self.report.sent + self.report.failed
        now = self.sender.clock()
        for issue in issues:
            if self.stopping:
                break
            if self._later.get(issue.id, now) > now:  # all it has left is due too far ahead to hand over yet
                continue
            try:
                report = self.sender.send_issue(issue)
            except SendAborted as exc:
                self.report.add(exc.report)
                raise
            self.report.add(report)
            if report.next_claim_at is not None and report.remaining == report.later:
                self._later[issue.id] = report.next_claim_at
            if report.sent or report.failed:
                log.info("issue %s: sent %d, failed %d, left %d, %d possible duplicates, %.1f s", report.week,
                         report.sent, report.failed, report.remaining, report.ambiguous, report.seconds)
                if report.timing():
                    log.info("issue %s: %s", report.week, report.timing())
            if report.halted:
                log.warning("%s (stopped after the batch in flight)",
                            IssueState.halted(report.halted).sentence(report.week))
        return self.report.sent + self.report.failed > before

    def _say_paused(self, paused) -> None:
        """Each pause once in the log, not once a pass (a worker idles DIGEST_WORKER_IDLE_SECONDS between passes)."""
        for issue in paused:
            if (issue.week, issue.paused_at) not in self._said:
                self._said.add((issue.week, issue.paused_at))
                state = IssueState.of(paused_at=issue.paused_at, pause_reason=issue.pause_reason)
                log.warning("%s", state.sentence(issue.week))
