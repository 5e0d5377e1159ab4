"""The sunset's SQL (digest.subscribers.sunset decides; issue 18, item 4): who is silent, who is asked, who
goes dormant, and the dormant readers' count and date. Set-based: each step is one statement over every
reader, so a million rows cost a handful of queries, not a loop in Python.

Human engagement is a non-machine open or click, a vote, or an answer the reader gave from one of our
pages (confirming, resubscribing, keeping, resuming): the last ones count so that a reader who pressed
"keep" is not asked again the next day because they still opened nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import aliased
from sqlmodel import Session

from storage.events import event_row, insert_events
from storage.models import Delivery, DeliveryStatus, Event, Subscriber, SubscriberStatus
from storage.models.votes import Vote

HUMAN_SIGNALS = ("open", "click")  # when not flagged machine (image proxies, Apple MPP, link scanners)
ANSWERS = ("confirm", "resubscribe", "keep", "resume")  # the reader's own action on one of our pages
MIN_ISSUES = 8  # issue 18: silence means something only after this many issues sent in the window
ACTIVE = SubscriberStatus.active.value
DORMANT = SubscriberStatus.dormant.value


class Asked(NamedTuple):
    """A reader claimed for the re-permission email: what their letter needs."""

    id: int
    email: str
    name: str
    link_tag: int


def _engaged_after(reader, moment):
    """The reader (``reader``: Subscriber or an alias) engaged after ``moment`` (a time or a column)."""
    human = or_(and_(Event.kind.in_(HUMAN_SIGNALS), Event.machine.is_(False)), Event.kind.in_(ANSWERS))
    event = exists().where(Event.subscriber_id == reader.id, Event.occurred_at > moment, human)
    vote = exists().where(Vote.subscriber_id == reader.id, Vote.cast_at > moment)
    return or_(event, vote)


def _issues_sent_since(reader, since: datetime):
    return (select(func.count(Delivery.id))
            .where(Delivery.subscriber_id == reader.id, Delivery.status == DeliveryStatus.sent.value,
                   Delivery.sent_at >= since).scalar_subquery())


def _to_ask(reader, *, now: datetime, since: datetime):
    """Active, unpaused, silent since ``since`` though sent MIN_ISSUES issues in that time, and not asked since
    they last engaged (a reader who answered an earlier ask by a click may be asked after a new silence)."""
    return and_(
        reader.status == ACTIVE,
        or_(reader.paused_until.is_(None), reader.paused_until <= now),
        ~_engaged_after(reader, since),
        _issues_sent_since(reader, since) >= MIN_ISSUES,
        or_(reader.repermission_sent_at.is_(None), _engaged_after(reader, reader.repermission_sent_at)),
    )


def _to_put_to_sleep(reader, *, asked_before: datetime):
    """Asked on or before ``asked_before`` and nothing since: no keep (it clears the ask), no engagement."""
    return and_(reader.status == ACTIVE, reader.repermission_sent_at.is_not(None),
                reader.repermission_sent_at <= asked_before, ~_engaged_after(reader, reader.repermission_sent_at))


def count_to_ask(*, session: Session, now: datetime, since: datetime) -> int:
    query = select(func.count()).select_from(Subscriber).where(_to_ask(Subscriber, now=now, since=since))
    return session.execute(query).scalar_one()


def count_to_put_to_sleep(*, session: Session, asked_before: datetime) -> int:
    query = select(func.count()).select_from(Subscriber).where(_to_put_to_sleep(Subscriber, asked_before=asked_before))
    return session.execute(query).scalar_one()


def claim_to_ask(*, session: Session, now: datetime, since: datetime, after: int, limit: int) -> list[Asked]:
    """Mark up to ``limit`` readers to ask, in id order after id ``after``, as asked at ``now``; return them.

    ``after`` walks the table once per pass (each batch starts where the last one ended) instead of
    scanning it again from the start for every 1000. The condition is checked again on each row the UPDATE
    takes, so two passes at once (two schedulers) never claim one reader twice."""
    inner = aliased(Subscriber)
    chosen = (select(inner.id).where(inner.id > after, _to_ask(inner, now=now, since=since))
              .order_by(inner.id).limit(limit))
    claimed = session.execute(
        update(Subscriber).where(Subscriber.id.in_(chosen.scalar_subquery()), _to_ask(Subscriber, now=now, since=since))
        .values(repermission_sent_at=now, updated_at=now)
        .returning(Subscriber.id, Subscriber.email, Subscriber.name, Subscriber.link_tag)
        .execution_options(synchronize_session=False))
    return sorted(Asked(*row) for row in claimed)


def release_claim(*, session: Session, ids: Sequence[int], asked_at: datetime) -> None:
    """The letter to ``ids`` did not go out: they were not asked (their next silent day asks them again)."""
    session.execute(update(Subscriber).where(Subscriber.id.in_(list(ids)), Subscriber.repermission_sent_at == asked_at)
                    .values(repermission_sent_at=None).execution_options(synchronize_session=False))


def put_to_sleep(*, session: Session, asked_before: datetime, now: datetime) -> int:
    """Make dormant every reader asked on or before ``asked_before`` who did not answer, each with a
    "dormant" event (a standing change, like an unsubscribe); returns how many."""
    slept = session.execute(
        update(Subscriber).where(_to_put_to_sleep(Subscriber, asked_before=asked_before))
        .values(status=DORMANT, updated_at=now).returning(Subscriber.id)
        .execution_options(synchronize_session=False)).scalars().all()
    if slept:
        insert_events(connection=session.connection(), rows=[
            event_row(kind="dormant", source="sunset", now=now, subscriber_id=reader, detail="no answer to the "
                      "re-permission email") for reader in slept])
    return len(slept)


def dormant_since(*, session: Session, subscriber_id: int) -> datetime | None:
    """When the reader last went dormant (their latest "dormant" event), or None."""
    query = select(func.max(Event.occurred_at)).where(Event.subscriber_id == subscriber_id, Event.kind == "dormant")
    return session.execute(query).scalar_one()


def count_dormant(*, connection) -> int:
    """Dormant readers, for `digest stats`. Takes a Connection or a Session."""
    query = select(func.count()).select_from(Subscriber).where(Subscriber.status == DORMANT)
    return connection.execute(query).scalar_one()
