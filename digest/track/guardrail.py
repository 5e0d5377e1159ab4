"""The guardrail (issue 18): a send that is hurting the sender's reputation pauses itself.

Each Event Webhook post adds its events to its issues' running totals (storage.guardrail, in the post's
transaction); then, for the issues it touched that are still sending:
- bounce rate = emails bounced or dropped / emails whose outcome is known (delivered, bounced or dropped:
  the issue's "processed", counted once each message is processed to an outcome), judged once
  DIGEST_GUARDRAIL_MIN_EVENTS (500) outcomes are known;
- complaint rate = emails reported as spam / emails delivered, judged once as many are delivered (judged
  on all outcomes, one early complaint among a few delivered would read as 10 %).
Test sends (`--test-to`) name no delivery, so no issue: they count nowhere. Events count by when they
happened, not when they arrive: after a resume (which starts the totals again) only those that happened
since, however far behind the webhook runs (`Issue.judged_since`, issue 21).
A rate past its maximum (DIGEST_MAX_BOUNCE_RATE 5 %, DIGEST_MAX_COMPLAINT_RATE 0.1 %: Gmail's line) pauses
the issue with the reason; every sender reads that before its next batch (storage.issue_state.halted), so
each stops within the batch it has in flight. The process that paused it logs one WARNING and, with
DIGEST_ALERT_EMAIL set, sends one email — one per issue ever (Issue.alerted_at): an issue resumed by hand
that trips again pauses again, logged, without a second email. Nothing here resumes an issue.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from digest.render import mail
from digest.render.environment import RenderedEmail
from digest.transports.base import Recipient, Transport
from storage.db import session_scope
from storage.guardrail import REPORTED, IssueOutcomes, claim_alert, sending_issues
from storage.issue_state import pause_issue

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from digest.config import Settings

log = logging.getLogger("digest.guardrail")

# Provider events (ours: digest.track.events.ProviderEvent.kind) that move a total: others never trip it.
COUNTED_KINDS = frozenset(REPORTED)


@dataclass(frozen=True)
class Limits:
    min_events: int
    max_bounce_rate: float
    max_complaint_rate: float

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(settings.guardrail_min_events, settings.max_bounce_rate, settings.max_complaint_rate)


@dataclass(frozen=True)
class Trip:
    """A rate past its maximum: ``count`` of ``of`` deliveries."""

    name: str  # "bounce rate", "complaint rate"
    count: int
    of: int
    limit: float

    @property
    def short(self) -> str:
        return f"{self.name} {percent(self.count / self.of)}"

    @property
    def reason(self) -> str:
        return f"{self.short} ({self.count} of {self.of}) > {percent(self.limit)}"


def percent(rate: float) -> str:
    """5.2%, 0.20%: two decimals below 1 %, where Gmail's 0.1 % and 0.3 % lines are."""
    return f"{rate * 100:.1f}%" if rate >= 0.01 else f"{rate * 100:.2f}%"


def verdict(outcomes: IssueOutcomes, limits: Limits) -> Trip | None:
    """Pure: the first rate past its maximum, or None. Strictly past: exactly 5.0 % is not over 5 %."""
    if outcomes.known >= limits.min_events and outcomes.failed / outcomes.known > limits.max_bounce_rate:
        return Trip("bounce rate", outcomes.failed, outcomes.known, limits.max_bounce_rate)
    if (outcomes.delivered >= limits.min_events
            and outcomes.complaints / outcomes.delivered > limits.max_complaint_rate):
        return Trip("complaint rate", outcomes.complaints, outcomes.delivered, limits.max_complaint_rate)
    return None


@dataclass(frozen=True)
class Paused:
    """An issue this call paused."""

    outcomes: IssueOutcomes
    trip: Trip
    alert: bool  # this call claimed the alert: it sends it


def check_issues(*, engine: Engine, settings: Settings, issue_ids: Iterable[int], now: datetime,
                 transport_for: Callable[[], Transport]) -> list[Paused]:
    """Judge the issues a webhook post touched; pause each past a limit (once, in one transaction), then send
    the alerts this call claimed. ``transport_for`` builds the transport, only when an alert is due."""
    if not issue_ids:
        return []  # the post moved no issue's totals (opens, clicks, test sends): no query at all
    limits = Limits.of(settings)
    # Read without SQLite's write lock (every post of a send comes here): only a trip needs to write.
    with engine.connect().execution_options(read_only=True) as connection, connection.begin():
        tripped = [(outcomes, trip) for outcomes in sending_issues(session=connection, issue_ids=issue_ids)
                   if (trip := verdict(outcomes, limits)) is not None]
    if not tripped:
        return []
    paused = []
    with session_scope(engine) as session:
        for outcomes, trip in tripped:
            if not pause_issue(session=session, issue_id=outcomes.issue_id, reason=f"guardrail: {trip.reason}",
                               now=now):
                continue  # paused already (by hand, or by another process just now), cancelled or done
            alert = bool(settings.alert_email) and claim_alert(session=session, issue_id=outcomes.issue_id, now=now)
            paused.append(Paused(outcomes, trip, alert))
    for pause in paused:  # after the commit: the pause stands even when the alert cannot be sent
        week = pause.outcomes.week
        log.warning("issue %s paused by the guardrail: %s; no more batches go out until `digest issue resume %s` "
                    "(or `digest issue cancel %s`)", week, pause.trip.reason, week, week)
        _hold_at_provider(pause, engine=engine, transport_for=transport_for, now=now)
        if pause.alert:
            _send_alert(pause, settings=settings, transport_for=transport_for, now=now)
    return paused


def _hold_at_provider(pause: Paused, *, engine: Engine, transport_for: Callable[[], Transport], now: datetime) -> None:
    """What the provider holds of the issue for its readers' hour (DIGEST_DELIVERY=local) is paused there too."""
    from digest.send.held import hold
    from storage.issue_state import provider_batch_id

    with session_scope(engine) as session:
        if provider_batch_id(session=session, issue_id=pause.outcomes.issue_id) is None:
            return  # nothing handed over ahead of its time: the common case costs one primary-key read
    transport = None
    try:
        transport = transport_for()
        held = hold(engine=engine, transport=transport, issue_id=pause.outcomes.issue_id, action="pause", now=now)
        if held.action:
            log.warning("%s", held.sentence(pause.outcomes.week))
    except Exception as error:  # noqa: BLE001 — the pause is stored; `digest issue pause WEEK` asks the provider again
        log.error("issue %s: what the provider holds for its readers' hour was not paused (%s: %s); run `digest issue "
                  "pause %s` to ask again", pause.outcomes.week, type(error).__name__, error, pause.outcomes.week)
    finally:
        if transport is not None:
            transport.close()


def _send_alert(pause: Paused, *, settings: Settings, transport_for: Callable[[], Transport], now: datetime) -> None:
    subject, text = alert_email(pause, now=now)
    email = RenderedEmail(subject=subject, html=f"<pre>{html.escape(text)}</pre>", text=text, mjml="")
    batch = mail.batch(settings=settings, email=email, categories=["guardrail-alert"], custom_args={},
                       recipients=[Recipient(delivery_id=None, email=settings.alert_email, name="", substitutions={},
                                             headers={})])
    transport = None
    try:
        transport = transport_for()
        transport.send(batch)
    except Exception as error:  # noqa: BLE001 — the pause is stored and logged; a lost alert must not fail the webhook
        log.error("guardrail alert for issue %s to %s not sent (%s: %s); the pause stands", pause.outcomes.week,
                  settings.alert_email, type(error).__name__, error)
    finally:
        if transport is not None:
            transport.close()


def alert_email(pause: Paused, *, now: datetime) -> tuple[str, str]:
    """Pure: the alert's subject and text — what tripped, the figures, what to check, the two ways on."""
    o, week = pause.outcomes, pause.outcomes.week
    subject = f"Issue {week} paused: {pause.trip.short}"
    text = f"""The guardrail paused issue {week} at {now:%Y-%m-%d %H:%M} UTC: {pause.trip.reason}.
No more batches go out until you decide; what was sent stays sent.

What SendGrid's Event Webhook has reported for this issue so far:
  emails whose outcome is known: {o.known}
  delivered: {o.delivered}
  bounced: {o.bounced}
  dropped by SendGrid: {o.dropped}
  reported as spam: {o.complaints}

What to check:
  - the bounce and drop reasons (SendGrid's Activity feed): one mailbox provider refusing us, or addresses
    that were never valid (a recent import?);
  - the sending domain's SPF, DKIM and DMARC, and whether it is on a blocklist;
  - for spam reports: whether these readers asked for the newsletter, and how they can leave it.

Then either
  digest issue resume {week}    (send the rest)
  digest issue cancel {week}    (the rest is never sent)
"""
    return subject, text
