"""Send an issue: lease pending deliveries in batches, hand each batch to the transport, record the result.

Exactly once, by construction:
- delivery rows exist before any request (the fan-out); a row is leased ('sending') and committed
  *before* its POST, and marked 'sent' with the provider's message id *after* it (in the transaction
  that leases the next batch: one transaction per batch);
- a crash leaves rows 'sending'; a rerun takes them over once their lease ran out (at once when the
  lease belongs to a dead process on this host) and sends them again.
The next batch is prepared while one is out (digest.send.ahead): on PostgreSQL the transaction that records a
batch and leases the next one opens early, leases ahead, uncommitted, and commits only after the POST returned;
on SQLite the next batch is only read ahead, and leased after the POST if still pending. Either way the order
above, and what a crash leaves, are the same.

The one case where a person can get two copies is the ambiguous one: the request may have reached the
provider but we never learned the outcome (a timeout or a dropped connection after the request was
written, or a crash between the POST and the commit). Our policy is to send again — a missed weekly
issue costs more trust than a rare duplicate — and to *count* every such re-send in
`Delivery.ambiguous_resends`, reported by `digest send`. Nothing is re-sent silently.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import NamedTuple

from digest.claim.local_time import send_at
from digest.progress import Progress
from digest.render import mail
from digest.render.environment import RenderedEmail
from digest.send.ahead import MISSED, Ahead, ReadAhead
from digest.send.owners import is_dead_here, new_owner
from digest.send.warmup import warmup_day
from digest.services import Services
from digest.transports.base import Batch, PermanentError, RateLimited, TransientError
from digest.votes.results import from_json
from storage.deliveries import (
    ClaimedBatch,
    claim_batch,
    end_idle_transaction_after,
    extend_lease,
    finish,
    lease_picked,
    pick_after,
    picked_batch,
    release,
    sending_owners,
    status_counts,
)
from storage.issue_state import halted, provider_batch_id, waiting
from storage.issues import complete_issue, find_segment, segment_count
from storage.models import DeliveryStatus, Issue, IssueKind, Segment
from storage.types import utcnow
from storage.warmup import give_back, reserve

BACKOFF_BASE = 0.5  # seconds; doubled per failed attempt ...
BACKOFF_CAP = 60.0  # ... up to a minute, then jittered down to half of that at random
RATE_LIMIT_MAX_WAIT = 900.0  # a reset further away than 15 minutes is an outage, not a rate limit
RATE_LIMIT_MAX_WAITS = 100  # consecutive 429s on one batch before we give up for this run
AHEAD_HOLD_SECONDS = 10.0  # a batch leased ahead stays locked at most this long idle (or the lease, if shorter)


class Prepared(NamedTuple):
    """The next batch as the thread prepared it (`Sender._prepare`)."""

    claimed: ClaimedBatch | None  # None: nothing left after the position
    built: Batch | None  # its request; None when it could not be built
    picked: list[tuple] | None  # SQLite: the rows read, to lease if still pending; None: leased already


class LeaseLost(Exception):
    """Another sender took over (some of) a batch's rows while this one waited to try it again."""


class SendAborted(Exception):
    """The provider kept failing; the batch went back to pending and a rerun resumes. Carries the report."""

    def __init__(self, message: str, report: "SendReport"):
        super().__init__(message)
        self.report = report


@dataclass
class SendReport:
    week: str
    segments: int = 0
    recipients: int = 0  # deliveries in the issue
    sent: int = 0  # sent by this run
    failed: int = 0  # refused for good by the provider in this run
    cancelled: int = 0  # left between fan-out and send
    batches: int = 0  # requests accepted
    requests: int = 0  # requests made, retries included
    retries: int = 0
    rate_limited: int = 0
    ambiguous: int = 0  # recipients handed over again after an unknown outcome (possible duplicates)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    remaining: int = 0  # still pending or leased when the run ended
    # DIGEST_DELIVERY=local (issue 19): recipients this run handed over to be held until their hour; of those
    # remaining, how many are due too far ahead to hand over yet, and when the first of them may be.
    scheduled: int = 0
    later: int = 0
    next_claim_at: datetime | None = None
    halted: str | None = None  # the issue was paused ("paused: <reason>") or cancelled: the run stopped (issue 18)

    def timing(self) -> str:
        """What this run left for the readers' own hour (DIGEST_DELIVERY=local), in words; "" when nothing."""
        parts = []
        if self.scheduled:
            parts.append(f"{self.scheduled:,} handed over to be delivered at their readers' hour")
        if self.later:
            parts.append(f"{self.later:,} due too far ahead to hand over yet: from "
                         f"{self.next_claim_at:%a %d %b %H:%M} UTC, the next run or worker does")
        return "; ".join(parts)


@dataclass
class Sender:
    """The send loop: sends issues with the services it is given. Time is passed in so tests need no real
    waits (the services' ``sleep`` is the one the loop waits with)."""

    services: Services
    clock: Callable[[], datetime] = utcnow
    jitter: Callable[[], float] = random.random
    owner: str = field(default_factory=new_owner)
    # Told the issue's deliveries still to send, then each batch as the provider takes it (digest.progress).
    progress: Progress | None = None
    # Asked between batches: True makes send_issue return after the batch in flight (a worker's SIGTERM).
    should_stop: Callable[[], bool] = lambda: False
    # Rendered segments, kept for the life of the process: a segment's content is fixed when its issue
    # opens, and a worker comes back to the same segments batch after batch, issue after issue.
    rendered: dict[int, tuple[Segment, RenderedEmail]] = field(default_factory=dict)
    # Why the current send_issue stopped before its issue was done: "paused: …" or "cancelled" (issue 18).
    halted: str | None = None
    # The provider's batch id of each issue whose batches it holds for their due time (issue 19).
    batch_ids: dict[int, str] = field(default_factory=dict)

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.services.settings.lease_seconds)

    def send_issue(self, issue: Issue, *, opened: int | None = None) -> SendReport:
        """Send what is left of ``issue``. ``opened``: the caller has just opened it, with that many deliveries,
        so its rows need no survey (a walk of all of them, 0.3 s at a million)."""
        started = time.monotonic()
        report = SendReport(week=issue.week)
        self.halted = None
        dead, to_send = self.services.transaction(lambda session: self._survey(session, issue, report, opened))
        progress = self.progress if to_send else None
        if progress is not None:
            progress.begin(issue.week, total=to_send, unit="sent")
        # One transaction per batch: it records the batch before as sent, then leases this one.
        record = None  # records the last accepted batch as sent, with the next claim
        position = None  # where our last batch ended (see claim_batch)
        ahead = None  # the next batch, leased and built while this one is posted
        pool = ThreadPoolExecutor(1, thread_name_prefix="ahead")
        try:
            while not self.should_stop():
                claimed, built, ahead = self._next(issue, record=record, after=position, dead=dead, ahead=ahead,
                                                   pool=pool)
                record = None
                if claimed is None:
                    break
                report.ambiguous += claimed.resent
                position = claimed.position
                if claimed.rows:
                    batch = built or self._leased_batch(issue, claimed)
                    ahead = ahead or self._ahead(pool, issue, after=position)
                    record = self._send_batch(batch, report, issue_id=issue.id)
                    if progress is not None and record is not None:  # once per batch: no cost per recipient
                        progress.advance(len(claimed.rows))
        finally:
            try:
                if ahead is not None:  # its rows were never leased: the rollback unlocks them
                    ahead.drop()
                if pool is not None:
                    pool.shutdown()
                if record is not None:  # every accepted batch is recorded before we report or return
                    self.services.transaction(record)
            finally:
                report.seconds = time.monotonic() - started
                report.halted = self.halted
                if progress is not None:
                    progress.end()
                self.services.transaction(lambda session: self._count_up(session, issue, report))
        return report

    def _survey(self, session, issue: Issue, report: SendReport, opened: int | None) -> tuple[list[str], int]:
        """The issue's size in the report; the owners of its leases that died on this host, and how many to send."""
        report.segments = segment_count(session=session, issue_id=issue.id)
        if opened is not None:  # just opened: every row pending, no lease of anyone's to take over
            report.recipients = opened
            return [], opened
        counts = status_counts(session=session, issue_id=issue.id)
        report.recipients = sum(counts.values())
        leased = counts.get(DeliveryStatus.sending.value, 0)
        dead = [o for o in sending_owners(session=session, issue_id=issue.id) if is_dead_here(o)] if leased else []
        return dead, counts.get(DeliveryStatus.pending.value, 0) + leased

    def _next(self, issue: Issue, *, record, after, dead: list[str], ahead: Ahead | ReadAhead | None,
              pool: ThreadPoolExecutor | None) -> tuple[ClaimedBatch | None, Batch | None, Ahead | ReadAhead | None]:
        """Record the batch before (``record``) and lease the next one, in one transaction; with the batch
        ``ahead`` prepared (digest.send.ahead) and the request it built, when there is one and it still holds;
        else as usual.

        With the batch after that already being prepared, on the thread, as soon as this one's position is
        known: the thread's work is a little longer than the POST it overlaps, so it starts before this commit."""
        claim = partial(self._claim, issue=issue, record=record, after=after, dead=dead)
        following = None
        try:
            if ahead is not None:
                prepared = ahead.picked()
                if prepared is not MISSED and prepared.claimed is not None and prepared.claimed.rows:
                    following = self._ahead(pool, issue, after=prepared.claimed.position)
                done = ahead.finish(partial(self._finish_ahead, claim))
                if done is not MISSED:
                    return (*done, following)
            return self.services.transaction(claim), None, following
        except BaseException:
            if following is not None:
                following.drop()
            raise

    def _ahead(self, pool: ThreadPoolExecutor | None, issue: Issue, *,
               after: tuple[int, int]) -> Ahead | ReadAhead | None:
        """The batch after ``after`` prepared on the thread (not while a domain warms up: the day's allowance is
        reserved batch by batch)."""
        if pool is None or warmup_day(self.services.settings, self.clock()) is not None:
            return None
        if self.services.engine.dialect.name == "postgresql":
            return Ahead(pool, self.services.engine, partial(self._prepare, issue=issue, after=after, lease=True))
        return ReadAhead(pool, self.services.engine, partial(self._prepare, issue=issue, after=after, lease=False),
                         self.services.transaction)

    def _prepare(self, session, *, issue: Issue, after: tuple[int, int], lease: bool) -> Prepared:
        """On the thread (digest.send.ahead), while the batch before is posted: the next batch after ``after`` —
        leased, uncommitted, on PostgreSQL; read on SQLite — and its request. A request that cannot be built is
        built again after the lease, where a failure gives the rows back with its error (`_leased_batch`)."""
        now = self.clock()
        settings = self.services.settings
        if lease:
            end_idle_transaction_after(session=session, seconds=min(AHEAD_HOLD_SECONDS, settings.lease_seconds))
            picked, claimed = None, claim_batch(session=session, issue_id=issue.id, owner=self.owner, now=now,
                                                lease_until=now + self.lease, limit=settings.batch_size, after=after,
                                                horizon=self._horizon(now))
        else:
            picked = pick_after(session=session, issue_id=issue.id, owner=self.owner, now=now,
                                limit=settings.batch_size, after=after, horizon=self._horizon(now))
            claimed = picked_batch(session=session, picked=picked) if picked else None
        built = None
        if claimed is not None and claimed.rows:
            try:
                built = self._batch(issue, claimed)
            except Exception:  # noqa: BLE001 - see above: built again, and its error kept, after the lease
                pass
        return Prepared(claimed=claimed, built=built, picked=picked)

    def _finish_ahead(self, claim, session, prepared: Prepared):
        """`_claim` with what was prepared ahead; from the start when nothing was left after our position."""
        if prepared.claimed is None:
            return claim(session, after=None), None
        claimed = claim(session, ahead=prepared)
        if claimed is MISSED:
            return MISSED
        # The request built ahead goes out only for exactly the rows it was built for (on SQLite, a claim afresh may
        # end where the batch read ahead ended, without the rows another sender took meanwhile).
        same = claimed is not None and claimed.rows == prepared.claimed.rows
        return claimed, prepared.built if same else None

    def _claim(self, session, *, issue: Issue, record, after, dead: list[str], ahead: Prepared | None = None):
        """Record the batch before as sent (``record``), then lease the next one, in this one transaction.

        ``ahead``: the next batch, prepared ahead (`_prepare`). Leased in this transaction already (PostgreSQL):
        MISSED, to roll it all back, when the issue was paused or cancelled, or a warm-up began, since (the caller
        then does it all again without it). Read (SQLite): leased here if no one took any of it since."""
        if record is not None:
            record(session)
        halt = halted(session=session, issue_id=issue.id)
        leased = ahead is not None and ahead.picked is None
        if halt is not None:  # paused by hand or by the guardrail, or cancelled: stop after the batch in flight
            if leased:
                return MISSED
            self.halted = halt
            return None
        now = self.clock()
        limit, day = self.services.settings.batch_size, warmup_day(self.services.settings, now)
        if day is not None:  # a new domain warming up: no more than today's allowance, shared by every sender
            if leased:
                return MISSED
            ahead = None
            limit = reserve(session=session, day=day[0], want=limit, allowance=day[1])
            if limit == 0:
                self.halted = f"warm-up: today's {day[1]:,} sends are used; the rest goes out from tomorrow"
                return None
        claim = partial(claim_batch, session=session, issue_id=issue.id, owner=self.owner, now=now,
                        lease_until=now + self.lease, limit=limit, dead_owners=dead, horizon=self._horizon(now))
        # After our last batch when there is anything there, else from the start, stale leases first.
        claimed = (ahead is not None and self._take(session, ahead, now)) or (after and claim(after=after)) or claim()
        if day is not None:
            give_back(session=session, day=day[0], unused=limit - (len(claimed.rows) if claimed else 0))
        if claimed is not None:
            self.services.transport.observe(session.connection())  # e.g. a shared rate limit, read in this transaction
        return claimed

    def _take(self, session, ahead: Prepared, now: datetime) -> ClaimedBatch | None:
        if ahead.picked is None:  # leased ahead, in this transaction
            return ahead.claimed
        return lease_picked(session=session, picked=ahead.picked, owner=self.owner, now=now,
                            lease_until=now + self.lease)

    @property
    def hold_window(self) -> timedelta:
        """How long before its due time a delivery is handed over (DIGEST_HOLD_HOURS, within the provider's limit)."""
        return min(self.services.transport.schedule_ahead, timedelta(hours=self.services.settings.hold_hours))

    def _horizon(self, now: datetime) -> datetime:
        """Deliveries due by then may be handed over now: the provider holds each until its due time."""
        return now + self.hold_window

    # -- one batch ------------------------------------------------------------------------------------

    def _send_batch(self, batch: Batch, report: SendReport, *, issue_id: int):
        """Post one batch until the provider takes it; returns the work that records it as sent (None when
        the provider refused it for good, which is recorded here, or when another sender took it over while this
        one waited to try again). Raises SendAborted when giving up."""
        try:
            return self._post(batch, report, issue_id=issue_id)
        except LeaseLost as exc:  # what is still ours goes back to pending; the rest is the other sender's to send
            ids = batch.delivery_ids()
            self.services.transaction(lambda session: release(session=session, ids=ids, owner=self.owner, error=None))
            report.errors.append(str(exc))
            return None

    def _post(self, batch: Batch, report: SendReport, *, issue_id: int):
        ids = batch.delivery_ids()
        failures = 0
        waits = 0
        while True:
            report.requests += 1
            try:
                if batch.send_at is not None and batch.batch_id is None:  # held: under the issue's batch id
                    batch = replace(batch, batch_id=self._batch_id(issue_id))
                result = self.services.transport.send(batch)
            except RateLimited as exc:
                waits += 1
                self._wait_for_reset(ids, exc, waits, report)
                continue
            except TransientError as exc:
                failures += 1
                self._back_off(ids, exc, failures, report)
                continue
            except PermanentError as exc:
                self._refused(ids, str(exc)[:1000], report)
                return None
            # The provider has the batch. Recording that must not be lost to a database hiccup, so it
            # waits out an outage (Services.transaction) rather than leave the rows to be re-sent as ambiguous.
            report.sent += len(ids)
            report.batches += 1
            report.scheduled += len(ids) if batch.send_at is not None else 0
            sent_at, message_id = self.clock(), result.message_id
            return lambda session: finish(session=session, ids=ids, owner=self.owner,
                                          status=DeliveryStatus.sent, now=sent_at, message_id=message_id)

    def _wait_for_reset(self, ids: list[int], exc: RateLimited, waits: int, report: SendReport) -> None:
        report.rate_limited += 1
        if waits > RATE_LIMIT_MAX_WAITS:
            self._give_up(ids, f"rate limited {waits} times in a row: {exc}", report)
        delay = self._rate_limit_delay(exc.reset_at)
        if delay is None:
            self._give_up(ids, f"rate limited until too far ahead: {exc}", report)
        self._extend(ids, ambiguous=False, extra=delay)
        self.services.sleep(delay)
        self._extend(ids, ambiguous=False, extra=0.0, observe=True)

    def _back_off(self, ids: list[int], exc: TransientError, failures: int, report: SendReport) -> None:
        report.retries += 1
        if exc.ambiguous:
            report.ambiguous += len(ids)
        if failures >= self.services.settings.max_attempts:
            self._give_up(ids, f"{failures} attempts failed, last: {exc}", report)
        delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (failures - 1)) * (0.5 + self.jitter() / 2)
        self._extend(ids, ambiguous=exc.ambiguous, extra=delay)
        self.services.sleep(delay)
        self._extend(ids, ambiguous=False, extra=0.0, observe=True)

    def _refused(self, ids: list[int], message: str, report: SendReport) -> None:
        self.services.transaction(lambda session: finish(session=session, ids=ids, owner=self.owner,
                                                          status=DeliveryStatus.failed, now=self.clock(), error=message))
        report.failed += len(ids)
        report.errors.append(f"batch of {len(ids)} refused: {message}")

    def _leased_batch(self, issue: Issue, claimed: ClaimedBatch) -> Batch:
        """The batch of rows just leased; if it cannot be built (a template error), the rows go back to
        pending at once: nothing was posted, so a rerun must not count them as possible duplicates."""
        try:
            return self._batch(issue, claimed)
        except Exception as exc:
            ids = [row[0] for row in claimed.rows]
            error = f"not rendered: {exc}"[:1000]
            self.services.transaction(lambda session: release(session=session, ids=ids, owner=self.owner, error=error))
            raise

    def _batch(self, issue: Issue, claimed: ClaimedBatch) -> Batch:
        if claimed.segment_id not in self.rendered:
            self.rendered[claimed.segment_id] = self.services.transaction(
                lambda session: self._render(session, issue, claimed.segment_id))
        segment, email = self.rendered[claimed.segment_id]
        settings, links, signer = self.services.settings, self.services.links, self.services.signer
        rows = claimed.rows
        tokens = signer.recipient_tokens([(row[1], row[0], row[4]) for row in rows])
        recipients = mail.recipients(rows, tokens, links, settings)
        held_until = send_at(claimed.due_at, self.clock())
        return replace(mail.issue_batch(settings=settings, week=issue.week, segment_id=segment.id, email=email,
                                        recipients=recipients), send_at=held_until)

    def _batch_id(self, issue_id: int) -> str:
        """The issue's batch id at the provider, made by the first batch held for its due time (issue 19)."""
        if issue_id not in self.batch_ids:
            known = self.services.transaction(lambda session: provider_batch_id(session=session, issue_id=issue_id))
            if known is None:
                new = self.services.transport.new_batch_id()
                known = self.services.transaction(
                    lambda session: provider_batch_id(session=session, issue_id=issue_id, new=new))
            self.batch_ids[issue_id] = known
        return self.batch_ids[issue_id]

    def _render(self, session, issue: Issue, segment_id: int) -> tuple[Segment, RenderedEmail]:
        segment = find_segment(session=session, segment_id=segment_id)
        email = mail.render_segment(session=session, renderer=self.services.renderer, settings=self.services.settings,
                                    week=issue.week, opened_at=issue.created_at,
                                    comparison_ids=mail.listed_ids(segment.comparison_ids), audience=segment.audience,
                                    issue_id=issue.id, change_ids=mail.listed_ids(segment.change_ids),
                                    results=from_json(issue.reader_results) if segment.reader_results else (),
                                    monthly=issue.kind == IssueKind.monthly.value)
        return segment, email

    # -- leases and bookkeeping ------------------------------------------------------------------------

    def _rate_limit_delay(self, reset_at: float | None) -> float | None:
        if reset_at is None:
            return 1.0 + self.jitter()
        delay = reset_at - self.clock().timestamp()
        if delay > RATE_LIMIT_MAX_WAIT:
            return None
        # A little past the reset, jittered, so that several senders do not all return at the same instant.
        return max(0.0, delay) + 0.05 + self.jitter() * 0.5

    def _extend(self, ids: list[int], *, ambiguous: bool, extra: float, observe: bool = False) -> None:
        """Keep the batch's lease through the wait before its next try (and again once the wait is over, just
        before the try, with ``observe``); LeaseLost when another sender holds any of its rows now (this one was
        cut off from the database past its lease): they are theirs to send.

        ``observe``: the transport reads what it shares with other senders (a rate limit) in this transaction, so
        the try that follows goes out at once, without a database read of its own that could outlast the lease.
        """
        def extend(session) -> int:
            kept = extend_lease(session=session, ids=ids, owner=self.owner, ambiguous=ambiguous,
                                lease_until=self.clock() + self.lease + timedelta(seconds=extra))
            if observe:
                self.services.transport.observe(session.connection())
            return kept
        kept = self.services.transaction(extend)
        if kept < len(ids):
            raise LeaseLost(f"{len(ids) - kept} of the batch's {len(ids)} recipients were taken over by another sender "
                            "while this one waited: not posted again")

    def _give_up(self, ids: list[int], why: str, report: SendReport) -> None:
        self.services.transaction(lambda session: release(session=session, ids=ids, owner=self.owner, error=why[:1000]))
        report.errors.append(why)
        raise SendAborted(f"sending stopped, {why}. Deliveries left pending; rerun `digest send` to resume.", report)

    def _count_up(self, session, issue: Issue, report: SendReport) -> None:
        counts = status_counts(session=session, issue_id=issue.id)
        report.cancelled = counts.get(DeliveryStatus.cancelled.value, 0)
        report.remaining = counts.get(DeliveryStatus.pending.value, 0) + counts.get(DeliveryStatus.sending.value, 0)
        if report.remaining == 0:
            complete_issue(session=session, issue_id=issue.id, now=self.clock())
        elif report.halted is None:  # due too far ahead to hand over yet (DIGEST_DELIVERY=local)?
            horizon = self._horizon(self.clock())
            report.later, first = waiting(session=session, issue_id=issue.id, horizon=horizon)
            if first is not None:
                report.next_claim_at = first - self.hold_window
