"""Send an issue: lease pending deliveries in batches, hand each batch to the transport, record the result.

Exactly once, by construction:
- delivery rows exist before any request (the fan-out); a row is leased ('sending') and committed
  *before* its POST, and marked 'sent' with the provider's message id *after* it (in the transaction
  that leases the next batch: one transaction per batch);
- a crash leaves rows 'sending'; a rerun takes them over once their lease ran out (at once when the
  lease belongs to a dead process on this host) and sends them again.

The one case where a person can get two copies is the ambiguous one: the request may have reached the
provider but we never learned the outcome (a timeout or a dropped connection after the request was
written, or a crash between the POST and the commit). Our policy is to send again — a missed weekly
issue costs more trust than a rare duplicate — and to *count* every such re-send in
`Delivery.ambiguous_resends`, reported by `digest send`. Nothing is re-sent silently.
"""

from __future__ import annotations

import html
import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import Engine

from digest.config import Settings
from digest.links import NAME_HTML_TAG, NAME_TEXT_TAG, TOKEN_TAG, Links, Signer
from digest.progress import Progress
from digest.render.email import Renderer
from digest.render.environment import RenderedEmail
from digest.subscribers.names import clean_name
from digest.transports.base import Batch, PermanentError, RateLimited, Recipient, TransientError, Transport
from storage.comparisons import load_comparisons
from storage.deliveries import claim_batch, extend_lease, finish, release, sending_owners, status_counts
from storage.issues import issue_segments
from storage.db import in_transaction
from storage.models import DeliveryStatus, Issue, Segment
from storage.types import utcnow

BACKOFF_BASE = 0.5  # seconds; doubled per failed attempt ...
BACKOFF_CAP = 60.0  # ... up to a minute, then jittered down to half of that at random
RATE_LIMIT_MAX_WAIT = 900.0  # a reset further away than 15 minutes is an outage, not a rate limit
RATE_LIMIT_MAX_WAITS = 100  # consecutive 429s on one batch before we give up for this run


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


@dataclass
class Sender:
    """Sends issues through one transport. Time and sleep are passed in so tests need no real waits."""

    engine: Engine
    settings: Settings
    transport: Transport
    renderer: Renderer
    signer: Signer
    links: Links
    clock: Callable[[], datetime] = utcnow
    sleep: Callable[[float], None] = time.sleep
    jitter: Callable[[], float] = random.random
    owner: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
    # Told the issue's deliveries still to send, then each batch as the provider takes it (digest.progress).
    progress: Progress | None = None
    # Asked between batches: True makes send_issue return after the batch in flight (a worker's SIGTERM).
    should_stop: Callable[[], bool] = lambda: False
    # Rendered segments, kept for the life of the process: a segment's content is fixed when its issue
    # opens, and a worker comes back to the same segments batch after batch, issue after issue.
    rendered: dict[int, tuple[Segment, RenderedEmail]] = field(default_factory=dict)

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.settings.lease_seconds)

    def send_issue(self, issue: Issue) -> SendReport:
        started = time.monotonic()
        report = SendReport(week=issue.week)

        def survey(session):
            report.segments = len(issue_segments(session=session, issue_id=issue.id))
            counts = status_counts(session=session, issue_id=issue.id)
            report.recipients = sum(counts.values())
            dead = [o for o in sending_owners(session=session, issue_id=issue.id) if _is_dead_here(o)]
            return dead, counts.get(DeliveryStatus.pending.value, 0) + counts.get(DeliveryStatus.sending.value, 0)

        dead, to_send = self.transaction(survey)
        progress = self.progress if to_send else None
        if progress is not None:
            progress.begin(issue.week, total=to_send, unit="sent")
        # One transaction per batch: it records the batch before as sent, then leases this one.
        record = None  # records the last accepted batch as sent, with the next claim
        position = None  # where our last batch ended (see claim_batch)
        try:
            while not self.should_stop():
                def work(session, record=record, after=position):
                    if record is not None:
                        record(session)
                    now = self.clock()
                    claim = partial(claim_batch, session=session, issue_id=issue.id, owner=self.owner, now=now,
                                    lease_until=now + self.lease, limit=self.settings.batch_size, dead_owners=dead)
                    # After our last batch when there is anything there, else from the start, stale leases first.
                    claimed = (after and claim(after=after)) or claim()
                    if claimed is not None:
                        self.transport.observe(session.connection())  # e.g. a shared rate limit, read in this transaction
                    return claimed

                claimed = self.transaction(work)
                record = None
                if claimed is None:
                    break
                report.ambiguous += claimed.resent
                position = claimed.position
                if claimed.rows:
                    record = self._send_batch(self._leased_batch(issue, claimed), report)
                    if progress is not None and record is not None:  # once per batch: no cost per recipient
                        progress.advance(len(claimed.rows))
        finally:
            try:
                if record is not None:  # every accepted batch is recorded before we report or return
                    self.transaction(record)
            finally:
                report.seconds = time.monotonic() - started
                if progress is not None:
                    progress.end()
                self._finish(issue, report)
        return report

    # -- one batch ------------------------------------------------------------------------------------

    def _send_batch(self, batch: Batch, report: SendReport):
        """Post one batch until the provider takes it; returns the work that records it as sent (None when
        the provider refused it for good, which is recorded here). Raises SendAborted when giving up."""
        ids = [recipient.delivery_id for recipient in batch.recipients]
        failures = 0
        waits = 0
        while True:
            report.requests += 1
            try:
                result = self.transport.send(batch)
            except RateLimited as exc:
                report.rate_limited += 1
                waits += 1
                if waits > RATE_LIMIT_MAX_WAITS:
                    self._give_up(ids, f"rate limited {waits} times in a row: {exc}", report)
                delay = self._rate_limit_delay(exc.reset_at)
                if delay is None:
                    self._give_up(ids, f"rate limited until too far ahead: {exc}", report)
                self._extend(ids, ambiguous=False, extra=delay)
                self.sleep(delay)
                continue
            except TransientError as exc:
                failures += 1
                report.retries += 1
                if exc.ambiguous:
                    report.ambiguous += len(ids)
                if failures >= self.settings.max_attempts:
                    self._give_up(ids, f"{failures} attempts failed, last: {exc}", report)
                delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (failures - 1)) * (0.5 + self.jitter() / 2)
                self._extend(ids, ambiguous=exc.ambiguous, extra=delay)
                self.sleep(delay)
                continue
            except PermanentError as exc:
                message = str(exc)[:1000]
                self.transaction(lambda session: finish(session=session, ids=ids, owner=self.owner,
                                                        status=DeliveryStatus.failed, now=self.clock(), error=message))
                report.failed += len(ids)
                report.errors.append(f"batch of {len(ids)} refused: {message}")
                return None
            # The provider has the batch. Recording that must not be lost to a database hiccup, so it
            # waits out an outage (Sender.transaction) rather than leave the rows to be re-sent as ambiguous.
            report.sent += len(ids)
            report.batches += 1
            sent_at, message_id = self.clock(), result.message_id
            return lambda session: finish(session=session, ids=ids, owner=self.owner,
                                                  status=DeliveryStatus.sent, now=sent_at, message_id=message_id)

    def _leased_batch(self, issue: Issue, claimed) -> Batch:
        """The batch of rows just leased; if it cannot be built (a template error), the rows go back to
        pending at once: nothing was posted, so a rerun must not count them as possible duplicates."""
        try:
            return self._batch(issue, claimed)
        except Exception as exc:
            ids = [row.delivery_id for row in claimed.rows]
            self.transaction(lambda session: release(session=session, ids=ids, owner=self.owner,
                                                             error=f"not rendered: {exc}"[:1000]))
            raise

    def _batch(self, issue: Issue, claimed) -> Batch:
        if claimed.segment_id not in self.rendered:
            self.rendered[claimed.segment_id] = self._render(issue, claimed.segment_id)
        segment, email = self.rendered[claimed.segment_id]
        recipients = []
        for row in claimed.rows:
            token = self.signer.recipient_token(subscriber_id=row.subscriber_id, delivery_id=row.delivery_id,
                                                tag=row.link_tag)
            recipients.append(recipient(row.delivery_id, row.email, row.name, token, self.links, self.settings))
        return self.batch(week=issue.week, segment_id=segment.id, email=email, recipients=recipients)

    def batch(self, *, week: str, segment_id: int | None, email: RenderedEmail, recipients: list[Recipient],
              test: bool = False) -> Batch:
        """One request's worth: the rendered segment and its recipients, with the list headers and tags."""
        custom_args = {"issue": week, "segment": str(segment_id or 0)}
        if test:
            custom_args["test"] = "true"  # webhook events of a test send map to no delivery
        return Batch(
            from_email=self.settings.from_email,
            from_name=self.settings.from_name,
            reply_to=self.settings.reply_to,
            subject=email.subject,
            html=email.html,
            text=email.text,
            recipients=recipients,
            headers={"List-Id": self.settings.list_id},
            categories=["test-send" if test else "weekly-digest", week],
            custom_args=custom_args,
        )

    def _rate_limit_delay(self, reset_at: float | None) -> float | None:
        if reset_at is None:
            return 1.0 + self.jitter()
        delay = reset_at - self.clock().timestamp()
        if delay > RATE_LIMIT_MAX_WAIT:
            return None
        # A little past the reset, jittered, so that several senders do not all return at the same instant.
        return max(0.0, delay) + 0.05 + self.jitter() * 0.5

    def _extend(self, ids: list[int], *, ambiguous: bool, extra: float) -> None:
        self.transaction(lambda session: extend_lease(
            session=session, ids=ids, owner=self.owner, lease_until=self.clock() + self.lease + timedelta(seconds=extra),
            ambiguous=ambiguous))

    def _give_up(self, ids: list[int], why: str, report: SendReport) -> None:
        self.transaction(lambda session: release(session=session, ids=ids, owner=self.owner, error=why[:1000]))
        report.errors.append(why)
        raise SendAborted(f"sending stopped, {why}. Deliveries left pending; rerun `digest send` to resume.", report)

    # -- rendering and bookkeeping ---------------------------------------------------------------------

    def _render(self, issue: Issue, segment_id: int) -> tuple[Segment, RenderedEmail]:
        def render(session):
            segment = session.get(Segment, segment_id)
            return segment, render_segment(session=session, renderer=self.renderer, settings=self.settings,
                                           issue=issue, segment=segment)

        return self.transaction(render)

    def transaction(self, work):
        """One transaction that waits out a database outage (DIGEST_DB_RETRY_SECONDS) instead of failing."""
        return in_transaction(self.engine, work, budget=self.settings.db_retry_seconds, sleep=self.sleep)

    def _finish(self, issue: Issue, report: SendReport) -> None:
        self.transaction(lambda session: self._count_up(session, issue, report))

    def _count_up(self, session, issue: Issue, report: SendReport) -> None:
        counts = status_counts(session=session, issue_id=issue.id)
        report.cancelled = counts.get(DeliveryStatus.cancelled.value, 0)
        report.remaining = counts.get(DeliveryStatus.pending.value, 0) + counts.get(DeliveryStatus.sending.value, 0)
        if report.remaining == 0:
            stored = session.get(Issue, issue.id)
            if stored.completed_at is None:
                stored.completed_at = self.clock()


def render_segment(*, session, renderer: Renderer, settings: Settings, issue: Issue, segment: Segment) -> RenderedEmail:
    """Render one segment of an issue: the first `max_shown` comparisons in full, the rest as "and K more"."""
    from digest.claim.selection import cap

    ids = [int(i) for i in segment.comparison_ids.split(",") if i]
    shown, more = cap(ids, settings.max_shown)
    comparisons = load_comparisons(session=session, ids=shown)
    return renderer.render_segment(
        week=issue.week,
        issue_date=issue.created_at.astimezone(settings.tz).date(),
        comparisons=comparisons,
        more_count=more,
        audience=segment.audience,
    )


def recipient(delivery_id: int | None, email: str, name: str, token: str, links: Links, settings: Settings) -> Recipient:
    """One recipient's substitutions and headers (headers are never substituted, so they come ready)."""
    name = clean_name(name)
    unsubscribe = f"<{links.unsubscribe(token)}>"
    if settings.unsubscribe_mailto:
        unsubscribe += f", <mailto:{settings.unsubscribe_mailto}?subject=unsubscribe%20{token}>"
    return Recipient(
        delivery_id=delivery_id,
        email=email,
        name=name,
        substitutions={TOKEN_TAG: token, NAME_HTML_TAG: html.escape(name or "there"), NAME_TEXT_TAG: name or "there"},
        headers={"List-Unsubscribe": unsubscribe, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
    )


def _is_dead_here(owner: str) -> bool:
    """True when a lease owner is a process on this host that no longer runs (it crashed or was killed)."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False  # our own earlier lease in this process: not dead, just ours (rerun in-process)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False
