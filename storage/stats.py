"""Counts for `digest stats` (digest.track.stats, which defines each figure): four GROUP BY queries per
issue, where the push of vote events to the site has got, and which issues are paused (issue 18)."""

from __future__ import annotations

from sqlalchemy import Engine, and_, case, distinct, exists, func, select

from storage.events import STORED_KIND
from storage.models import Delivery, DeliveryStatus, Event, Issue, SitePush, Vote, VoteEvent

UNSUBSCRIBE_KINDS = ("unsubscribe", "group_unsubscribe")
# IssueStats field → the per-delivery column summed into it.
EVENT_SUMS = {"delivered": "delivered", "bounced": "bounced", "soft_bounced": "soft_bounced", "dropped": "dropped",
              "human_openers": "human_open", "opens": "opens", "machine_opens": "machine_opens",
              "clickers": "clicked", "clicks": "clicks", "unsubscribes": "unsubscribed", "complaints": "complained"}
EVENT_COUNTS = ("machine_only_openers", *EVENT_SUMS)
# The issue's own columns that say whether it is sending, paused (and why), cancelled or done (issue 18).
STATE_COLUMNS = ("created_at", "completed_at", "paused_at", "pause_reason", "cancelled_at")


def _flag(condition) -> object:
    return func.max(case((condition, 1), else_=0))


def _count(condition) -> object:
    return func.sum(case((condition, 1), else_=0))


def issue_counts(*, engine: Engine, week: str | None = None) -> dict[str, dict[str, int]]:
    """week → {IssueStats field: count}, and the issue's STATE_COLUMNS, for every issue or for the issue of ``week``
    (none if there is none)."""
    issue_filter = [Issue.week == week] if week else []
    with engine.connect() as connection:
        counts = {row.week: {"recipients": row.recipients, "sent": int(row.sent or 0), "failed": int(row.failed or 0),
                             **{name: getattr(row, name) for name in STATE_COLUMNS}}
                  for row in connection.execute(_delivery_counts(issue_filter))}
        for row in connection.execute(_event_counts(issue_filter)):
            counts[row.week].update({name: int(getattr(row, name) or 0) for name in EVENT_COUNTS})
        for row in connection.execute(_webhook_counts(issue_filter)):
            counts[row.week].update(webhook_events=row.received, newest_event_at=row.newest)
        for row in connection.execute(_vote_counts(issue_filter)):
            figures = counts[row.week]
            figures.update(votes=row.votes, voters=row.voters)
            # A vote is a click for engagement: a reader who voted without a human click joins the clickers.
            figures["clickers"] = figures.get("clickers", 0) + row.voted_without_click
    return counts


def _delivery_counts(issue_filter: list):
    is_sent = Delivery.status == DeliveryStatus.sent.value
    is_failed = Delivery.status == DeliveryStatus.failed.value
    state = [getattr(Issue, name) for name in STATE_COLUMNS]  # one value per issue: grouped by with it
    return (
        select(Issue.week, func.count(Delivery.id).label("recipients"), _count(is_sent).label("sent"),
               _count(is_failed).label("failed"), *state)
        .select_from(Issue).outerjoin(Delivery, Delivery.issue_id == Issue.id)
        .where(*issue_filter).group_by(Issue.id, Issue.week, *state)
    )


def _event_counts(issue_filter: list):
    human, machine = Event.machine.is_(False), Event.machine.is_(True)
    # One row per delivery with events: what happened to it, as 0/1 flags and counts ...
    per_delivery = (
        select(
            Delivery.issue_id,
            _flag(Event.kind == "delivered").label("delivered"),
            _flag(Event.kind == "bounce").label("bounced"),
            _flag(Event.kind == STORED_KIND["soft_bounce"]).label("soft_bounced"),
            _flag(Event.kind == "dropped").label("dropped"),
            _flag(and_(Event.kind == "open", human)).label("human_open"),
            _flag(and_(Event.kind == "open", machine)).label("machine_open"),
            _count(Event.kind == "open").label("opens"),
            _count(and_(Event.kind == "open", machine)).label("machine_opens"),
            _flag(and_(Event.kind == "click", human)).label("clicked"),
            _count(Event.kind == "click").label("clicks"),
            _flag(Event.kind.in_(UNSUBSCRIBE_KINDS)).label("unsubscribed"),
            _flag(Event.kind == STORED_KIND["complaint"]).label("complained"),
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
    return (
        select(Issue.week, machine_only, *sums)
        .select_from(per_delivery).join(Issue, Issue.id == d.issue_id).group_by(Issue.week)
    )


def _webhook_counts(issue_filter: list):
    """Per issue: the events the provider's webhook reported (and the unsubscribes they made), and when the
    newest of them happened (issue 21: how far behind the webhook is)."""
    return (
        select(Issue.week, func.count(Event.id).label("received"), func.max(Event.occurred_at).label("newest"))
        .select_from(Event).join(Issue, Issue.id == Event.issue_id)
        .where(Event.source == "webhook", *issue_filter).group_by(Issue.week)
    )


def _vote_counts(issue_filter: list):
    """Per issue: the standing votes cast from its email, their distinct readers, and how many of those
    readers' deliveries of it have no human click (the clickers the event counts do not hold yet)."""
    human_click = exists().where(Event.delivery_id == Delivery.id, Event.kind == "click", Event.machine.is_(False))
    # The delivery is the reader's email of that issue (one per reader and issue: uq_delivery_subscriber_issue).
    voted_only = case((and_(Delivery.id.is_not(None), ~human_click), Delivery.id))
    return (
        select(Issue.week, func.count(Vote.id).label("votes"), func.count(distinct(Vote.subscriber_id)).label("voters"),
               func.count(distinct(voted_only)).label("voted_without_click"))
        .select_from(Vote).join(Issue, Issue.id == Vote.issue_id)
        .outerjoin(Delivery, and_(Delivery.issue_id == Vote.issue_id, Delivery.subscriber_id == Vote.subscriber_id))
        .where(*issue_filter).group_by(Issue.week)
    )


def site_push_counts(*, engine: Engine) -> dict:
    """How far the push of vote events to the site has got: events waiting (after ``pushed_through``; no
    site_push row yet means none pushed), the oldest one's cast_at, and the failing state the push keeps."""
    with engine.connect() as connection:
        push = connection.execute(select(SitePush).where(SitePush.id == 1)).first()
        pushed_through = push.pushed_through if push is not None else 0
        waiting, oldest = connection.execute(select(func.count(VoteEvent.id), func.min(VoteEvent.cast_at))
                                             .where(VoteEvent.id > pushed_through)).one()
    return {"waiting": waiting, "oldest_waiting_at": oldest,
            "failing_since": push.failing_since if push is not None else None,
            "last_error": push.last_error if push is not None else None,
            "expired": push.expired if push is not None else 0}


def issue_states_mark(*, session) -> tuple:
    """Changes whenever an issue is paused, resumed, cancelled or finished: the editor's page reloads on it."""
    return tuple(session.execute(select(func.count(Issue.paused_at), func.max(Issue.paused_at),
                                        func.count(Issue.cancelled_at), func.count(Issue.completed_at))).one())
