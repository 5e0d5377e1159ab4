"""What the provider holds for its readers' hour (DIGEST_DELIVERY=local, issue 19), kept within reach of a pause,
the guardrail and a cancel.

A delivery handed over with a ``send_at`` is ours no more: SendGrid sends it at its time. What it still holds
of an issue (everything under the issue's batch id, ``issue.provider_batch_id``) can be paused, cancelled, or
released again — until 10 minutes before each batch's time. So a pause (by hand or by the guardrail) pauses it
there too, a resume releases it, and a cancel cancels it: the deliveries the provider agreed to drop become
``cancelled`` here as well. The provider's answer is recorded (``issue.provider_hold``); a provider that cannot
be reached leaves things as they were, says so, and the same command asks again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from storage.db import session_scope
from storage.issue_state import cancel_held, held, set_provider_hold
from storage.models import Issue

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from digest.transports.base import Transport

# SendGrid stops a held batch no later than 10 minutes before its send_at: what is due sooner goes out anyway.
NOTICE = timedelta(minutes=10)


@dataclass(frozen=True)
class Held:
    """What the provider was told about an issue's held sends, and what came of it."""

    action: str  # "pause", "cancel" or "release"; "" when the provider holds nothing of the issue
    held: int = 0  # deliveries it held further than NOTICE ahead
    done: bool = False  # the provider took it
    cancelled: int = 0  # deliveries cancelled here because the provider dropped them
    transport: str = ""

    def sentence(self, week: str) -> str:
        if not self.action:
            return ""
        if not self.done:
            return (f"issue {week}: the {self.transport} transport cannot hold back what it was given: the {self.held} "
                    "emails it has for their readers' hour go out as dated")
        if self.action == "cancel":
            return (f"issue {week}: {self.transport} dropped the {self.cancelled} deliveries it held for their readers' "
                    "hour; what was due within 10 minutes may still go out")
        if self.action == "pause":
            return (f"issue {week}: {self.transport} holds back the {self.held} deliveries it had for their readers' "
                    "hour until the issue is resumed; what was due within 10 minutes may still go out")
        return f"issue {week}: {self.transport} sends what it holds at each reader's hour again"


def hold(*, engine: Engine, transport: Transport, issue_id: int, action: str, now: datetime) -> Held:
    """Tell the provider to "pause", "cancel" or "release" what it holds of the issue, and record it. Raises the
    transport's errors (nothing recorded: the caller says so, and asking again is safe)."""
    with session_scope(engine) as session:
        issue = session.get(Issue, issue_id)
        batch_id, status = issue.provider_batch_id, issue.provider_hold
        waiting, _ = held(session=session, issue_id=issue_id, now=now + NOTICE)
    if batch_id is None or status == "cancel" or (action == "release" and status is None) or status == action:
        return Held(action="")  # nothing handed over to hold, nothing to change
    if action == "release":
        done = transport.release_scheduled(batch_id)
    else:
        done = transport.hold_scheduled(batch_id, action, change=status is not None)
    cancelled = 0
    if done:
        with session_scope(engine) as session:
            set_provider_hold(session=session, issue_id=issue_id, status=None if action == "release" else action)
            if action == "cancel":
                cancelled = cancel_held(session=session, issue_id=issue_id, after=now + NOTICE)
    return Held(action=action, held=waiting, done=done, cancelled=cancelled, transport=transport.name)
