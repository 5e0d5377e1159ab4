"""Per-issue figures for editors (`digest stats`): counted in the database, three GROUP BY queries in all.

Definitions (each "deliveries with …" counts a recipient once, however many events they caused):
- recipients: deliveries of the issue (the audience fixed at fan-out); sent / failed: by delivery status;
- delivered: deliveries with a provider "delivered" event;
- bounced: deliveries with a hard bounce (a soft bounce, the receiving server refusing for now, is
  counted apart); dropped: deliveries the provider refused to send (digest.track.events);
- human openers: deliveries with at least one open not flagged machine (the unique open figure);
- machine-only openers: deliveries opened, but only by machines (image proxies, Apple Mail Privacy
  Protection): probably unread, possibly read;
- opens / machine opens: every open event, and those flagged machine (totals, not people);
- clickers: deliveries with a click not flagged machine (link scanners), or whose reader voted from that
  issue's email: a vote is a click for engagement, and a reader who clicked and voted counts once;
  clicks: every click event (votes are not clicks there);
- votes: readers' standing votes (one per reader and tool, the last choice) cast from that issue's email;
  voters: the distinct readers among them. A vote changed from a later issue's email counts for that
  issue from then on (the standing vote keeps the email it last came from); a reader who is deleted takes
  their votes with them;
- unsubscribes / complaints: deliveries with an unsubscribe (any source) / a spam report;
- webhook events: the events SendGrid's Event Webhook reported of the issue's emails (with the unsubscribes
  they made); newest event: when the newest of them happened (its age says how far behind the webhook is:
  SendGrid posts most events within a minute); sent, no outcome yet: emails sent that the webhook has not
  reported delivered, bounced or dropped — its backlog, with the provider's own (deferred mail), shown once
  the webhook reported anything of the issue (without it every sent email would be "waiting").

Rates are of *delivered* when the issue has any delivered events (the webhook is on), else of *sent*
(`rate_base` says which): bounce rate is always of sent.

Each issue's state (issue 18): sending (opened, deliveries left), paused (by hand or by the guardrail: the
reason and since when; nothing more goes out until `digest issue resume`), cancelled (by hand: what was pending
never goes out), or done (every delivery closed).

Not per issue: the push of vote events to the site (DIGEST_SITE_WEBHOOK_URL), how many wait and since when
it fails (`site_push_status`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from storage.stats import STATE_COLUMNS, issue_counts, site_push_counts

if TYPE_CHECKING:
    from sqlalchemy import Engine

STATES = ("sending", "paused", "cancelled", "done")


@dataclass(frozen=True)
class IssueState:
    """Where an issue stands (issue 18): one of STATES, why (paused: who or what paused it; cancelled: by
    hand, the only way), and since when (sending: since it opened)."""

    name: str
    reason: str | None = None
    since: datetime | None = None

    @classmethod
    def of(cls, *, created_at=None, completed_at=None, paused_at=None, pause_reason=None,
           cancelled_at=None) -> IssueState:
        """From the issue's columns. Cancelled wins (final); done beats paused: a pause that came as the last
        batch went out leaves nothing to resume."""
        if cancelled_at is not None:
            return cls("cancelled", "cancelled by hand", cancelled_at)
        if completed_at is not None:
            return cls("done", None, completed_at)
        if paused_at is not None:
            return cls("paused", pause_reason or "paused by hand", paused_at)
        return cls("sending", None, created_at)

    @classmethod
    def halted(cls, halt: str) -> IssueState:
        """From the send loop's SendReport.halted ("paused: <reason>" or "cancelled"), which carries no time."""
        name, _, reason = halt.partition(": ")
        if name == "warm-up":  # not a halt: today's warm-up allowance is used (digest.send.warmup)
            return cls("warming up", reason)
        return cls("paused", reason or "paused by hand") if name == "paused" else cls("cancelled", "cancelled by hand")

    @property
    def halts(self) -> bool:
        return self.name in ("paused", "cancelled")

    def sentence(self, week: str) -> str:
        """ "issue 2026-W48 is paused since 2026-11-30 19:05 UTC (guardrail: …): nothing more is sent until …" """
        since = f" since {utc(self.since)}" if self.since else ""
        if self.name == "paused":
            return (f"issue {week} is paused{since} ({self.reason}): nothing more is sent until "
                    f"`digest issue resume {week}`")
        if self.name == "cancelled":
            on = f" on {utc(self.since)}" if self.since else ""
            return f"issue {week} was cancelled{on}: nothing more is sent, and it cannot be resumed"
        if self.name == "warming up":
            return f"issue {week} waits for the warm-up ({self.reason})"
        return f"issue {week} is {self.name}{since}"

    def as_dict(self) -> dict:
        return {"state": self.name, "state_reason": self.reason,
                "state_since": self.since.isoformat() if self.since else None}


def utc(moment: datetime) -> str:
    return f"{moment.astimezone(timezone.utc):%Y-%m-%d %H:%M} UTC"


@dataclass
class IssueStats:
    week: str
    recipients: int = 0
    sent: int = 0
    failed: int = 0
    delivered: int = 0
    bounced: int = 0
    soft_bounced: int = 0
    dropped: int = 0
    human_openers: int = 0
    machine_only_openers: int = 0
    opens: int = 0
    machine_opens: int = 0
    clickers: int = 0
    clicks: int = 0
    votes: int = 0
    voters: int = 0
    unsubscribes: int = 0
    complaints: int = 0
    webhook_events: int = 0
    newest_event_at: datetime | None = None
    state: IssueState = IssueState("sending")

    @property
    def awaiting_outcome(self) -> int | None:
        """Emails sent whose outcome the webhook has not reported; None before it reported anything."""
        if not self.webhook_events:
            return None
        return max(0, self.sent - self.delivered - self.bounced - self.dropped)

    def newest_event_age(self, now: datetime) -> float | None:
        """Seconds since the newest reported event happened."""
        return None if self.newest_event_at is None else max(0.0, (now - self.newest_event_at).total_seconds())

    @property
    def rate_base(self) -> str:
        return "delivered" if self.delivered else "sent"

    def _rate(self, count: int, base: int) -> float | None:
        return round(count / base, 4) if base else None

    @property
    def rates(self) -> dict[str, float | None]:
        base = self.delivered or self.sent
        return {
            "bounce": self._rate(self.bounced, self.sent),
            "open": self._rate(self.human_openers, base),
            "machine_only_open": self._rate(self.machine_only_openers, base),
            "click": self._rate(self.clickers, base),
            "vote": self._rate(self.voters, base),
            "unsubscribe": self._rate(self.unsubscribes, base),
            "complaint": self._rate(self.complaints, base),
        }

    def as_dict(self, *, now: datetime | None = None) -> dict:
        """Every figure; with ``now``, the newest event's age in seconds too."""
        figures = {name: value for name, value in asdict(self).items() if name not in ("state", "newest_event_at")}
        webhook = {"newest_event_at": self.newest_event_at.isoformat() if self.newest_event_at else None,
                   "awaiting_outcome": self.awaiting_outcome}
        if now is not None:
            age = self.newest_event_age(now)
            webhook["newest_event_age_seconds"] = None if age is None else round(age)
        return {**figures, **webhook, **self.state.as_dict(), "rate_base": self.rate_base, "rates": self.rates}


def issue_stats(*, engine: Engine, week: str | None = None) -> list[IssueStats]:
    """Figures for every issue (newest first), or for the issue of ``week`` (empty if there is none)."""
    counts = issue_counts(engine=engine, week=week)
    rows = []
    for issue_week, figures in counts.items():
        state = IssueState.of(**{name: figures.pop(name) for name in STATE_COLUMNS})
        rows.append(IssueStats(week=issue_week, state=state, **figures))
    return sorted(rows, key=lambda s: s.week, reverse=True)


@dataclass(frozen=True)
class SitePushStatus:
    """The push of vote events to the site: events waiting (cast after the last one the site took), the
    oldest one's time, since when pushing fails and why, and how many expired unsent after 3 days."""

    waiting: int
    oldest_waiting_at: datetime | None
    failing_since: datetime | None
    last_error: str | None
    expired: int

    def as_dict(self) -> dict:
        return {name: value.isoformat() if isinstance(value, datetime) else value
                for name, value in asdict(self).items()}


def site_push_status(*, engine: Engine, webhook_url: str | None) -> SitePushStatus | None:
    """Where the push has got, or None when no site webhook is configured (nothing is pushed then)."""
    if not webhook_url:
        return None
    return SitePushStatus(**site_push_counts(engine=engine))
