"""Per-issue figures for editors (`digest stats`): counted in the database, two GROUP BY queries in all.

Definitions (each "deliveries with …" counts a recipient once, however many events they caused):
- recipients: deliveries of the issue (the audience fixed at fan-out); sent / failed: by delivery status;
- delivered: deliveries with a provider "delivered" event;
- bounced: deliveries with a hard bounce (SendGrid "bounce" of type bounce; "blocked" is a soft bounce,
  counted apart); dropped: deliveries SendGrid refused to send;
- human openers: deliveries with at least one open not flagged machine (the unique open figure);
- machine-only openers: deliveries opened, but only by machines (image proxies, Apple Mail Privacy
  Protection): probably unread, possibly read;
- opens / machine opens: every open event, and those flagged machine (totals, not people);
- clickers: deliveries with a click not flagged machine (link scanners); clicks: every click event;
- unsubscribes / complaints: deliveries with an unsubscribe (any source) / a spam report.

Rates are of *delivered* when the issue has any delivered events (the webhook is on), else of *sent*
(`rate_base` says which): bounce rate is always of sent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from sqlalchemy import Engine, and_, case, func, select

from storage.models import Delivery, DeliveryStatus, Event, Issue

UNSUBSCRIBE_KINDS = ("unsubscribe", "group_unsubscribe")
# IssueStats field → the per-delivery column summed into it.
EVENT_SUMS = {"delivered": "delivered", "bounced": "bounced", "soft_bounced": "soft_bounced", "dropped": "dropped",
              "human_openers": "human_open", "opens": "opens", "machine_opens": "machine_opens",
              "clickers": "clicked", "clicks": "clicks", "unsubscribes": "unsubscribed", "complaints": "complained"}


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
    unsubscribes: int = 0
    complaints: int = 0

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
            "unsubscribe": self._rate(self.unsubscribes, base),
            "complaint": self._rate(self.complaints, base),
        }

    def as_dict(self) -> dict:
        return {**asdict(self), "rate_base": self.rate_base, "rates": self.rates}


def _flag(condition) -> object:
    return func.max(case((condition, 1), else_=0))


def _count(condition) -> object:
    return func.sum(case((condition, 1), else_=0))


def issue_stats(*, engine: Engine, week: str | None = None) -> list[IssueStats]:
    """Figures for every issue (newest first), or for the issue of ``week`` (empty if there is none)."""
    issue_filter = [Issue.week == week] if week else []
    is_sent = Delivery.status == DeliveryStatus.sent.value
    is_failed = Delivery.status == DeliveryStatus.failed.value
    deliveries = (
        select(Issue.week, func.count(Delivery.id).label("recipients"), _count(is_sent).label("sent"),
               _count(is_failed).label("failed"))
        .select_from(Issue).outerjoin(Delivery, Delivery.issue_id == Issue.id)
        .where(*issue_filter).group_by(Issue.id, Issue.week)
    )
    human, machine = Event.machine.is_(False), Event.machine.is_(True)
    # One row per delivery with events: what happened to it, as 0/1 flags and counts ...
    per_delivery = (
        select(
            Delivery.issue_id,
            _flag(Event.kind == "delivered").label("delivered"),
            _flag(Event.kind == "bounce").label("bounced"),
            _flag(Event.kind == "blocked").label("soft_bounced"),
            _flag(Event.kind == "dropped").label("dropped"),
            _flag(and_(Event.kind == "open", human)).label("human_open"),
            _flag(and_(Event.kind == "open", machine)).label("machine_open"),
            _count(Event.kind == "open").label("opens"),
            _count(and_(Event.kind == "open", machine)).label("machine_opens"),
            _flag(and_(Event.kind == "click", human)).label("clicked"),
            _count(Event.kind == "click").label("clicks"),
            _flag(Event.kind.in_(UNSUBSCRIBE_KINDS)).label("unsubscribed"),
            _flag(Event.kind == "spamreport").label("complained"),
        )
        .select_from(Event).join(Delivery, Delivery.id == Event.delivery_id)
        .join(Issue, Issue.id == Delivery.issue_id).where(*issue_filter)
        .group_by(Delivery.issue_id, Event.delivery_id)
        .subquery()
    )
    d = per_delivery.c
    # ... summed per issue.
    sums = [func.sum(getattr(d, column)).label(name) for name, column in EVENT_SUMS.items()]
    machine_only = _count(and_(d.machine_open == 1, d.human_open == 0)).label("machine_only_openers")
    events = (
        select(Issue.week, machine_only, *sums)
        .select_from(per_delivery).join(Issue, Issue.id == d.issue_id).group_by(Issue.week)
    )
    with engine.connect() as connection:
        stats = {row.week: IssueStats(week=row.week, recipients=row.recipients, sent=int(row.sent or 0),
                                      failed=int(row.failed or 0))
                 for row in connection.execute(deliveries)}
        for row in connection.execute(events):
            for name in ("machine_only_openers", *EVENT_SUMS):
                setattr(stats[row.week], name, int(getattr(row, name) or 0))
    return sorted(stats.values(), key=lambda s: s.week, reverse=True)
