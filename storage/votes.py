"""Readers' votes (issue 17): cast one, read the readers' tally, page through the events, a reader's own.

Event ids are handed out in commit order: on PostgreSQL a vote's transaction takes one advisory lock before
it writes its event, so no event commits after a later id (a reader paging by id, or the push's cursor,
would skip it for good). Votes are human clicks, a few a second at most: the lock costs nothing.
SQLite writes one transaction at a time anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select, text
from sqlmodel import Session

from storage.models import Comparison, IssueComparison, Tool, Vote, VoteEvent

_EVENT_ORDER_LOCK = 17_017  # pg_advisory_xact_lock key of the vote events' order


@dataclass(frozen=True)
class Votable:
    """A comparison a reader can vote on (one an issue carried): what the vote page shows."""

    id: int
    slug: str
    title: str
    url: str
    tools: tuple[str, ...]  # names, in page order: the link's tool n is tools[n - 1]


def votable(*, session: Session, slug: str) -> Votable | None:
    """The comparison ``slug`` if an issue carried it (nothing else was ever in an email), else None."""
    row = session.execute(select(Comparison.id, Comparison.slug, Comparison.title, Comparison.url)
                          .join(IssueComparison, IssueComparison.comparison_id == Comparison.id)
                          .where(Comparison.slug == slug)).first()
    if row is None:
        return None
    names = session.execute(select(Tool.name).where(Tool.comparison_id == row.id).order_by(Tool.position)).scalars()
    return Votable(id=row.id, slug=row.slug, title=row.title, url=row.url, tools=tuple(names))


def standing_choice(*, session: Session, subscriber_id: int, comparison_id: int, position: int) -> str | None:
    query = select(Vote.choice).where(Vote.subscriber_id == subscriber_id, Vote.comparison_id == comparison_id,
                                      Vote.tool_position == position)
    return session.execute(query).scalar_one_or_none()


def cast(*, session: Session, subscriber_id: int, comparison: Votable, position: int, choice: str,
         issue_id: int | None, voter: str, now: datetime) -> str:
    """Record the reader's vote: "recorded" (their first on this tool), "changed" (the other choice
    replaces theirs, and the event says which it replaces) or "unchanged" (the same again: nothing written)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _EVENT_ORDER_LOCK})
    query = select(Vote).where(Vote.subscriber_id == subscriber_id, Vote.comparison_id == comparison.id,
                               Vote.tool_position == position).with_for_update()
    vote = session.execute(query).scalar_one_or_none()
    if vote is not None and vote.choice == choice:
        return "unchanged"
    event = VoteEvent(comparison=comparison.slug, tool=position + 1, choice=choice, voter=voter, cast_at=now,
                      replaces=vote.event_id if vote is not None else None)
    session.add(event)
    session.flush()
    if vote is None:
        session.add(Vote(subscriber_id=subscriber_id, comparison_id=comparison.id, tool_position=position,
                         choice=choice, issue_id=issue_id, event_id=event.id, cast_at=now))
        session.flush()
        return "recorded"
    vote.choice, vote.event_id, vote.cast_at = choice, event.id, now
    vote.issue_id = issue_id if issue_id is not None else vote.issue_id
    return "changed"


def tally(*, session: Session, comparison_id: int, position: int) -> tuple[int, int]:
    """(ship, skip) of this newsletter's readers for one tool."""
    rows = dict(session.execute(select(Vote.choice, func.count()).where(
        Vote.comparison_id == comparison_id, Vote.tool_position == position).group_by(Vote.choice)).all())
    return rows.get("ship", 0), rows.get("skip", 0)


def events_after(*, session: Session, after: int, limit: int) -> list[VoteEvent]:
    """The vote events with an id above ``after``, in order, at most ``limit``."""
    query = select(VoteEvent).where(VoteEvent.id > after).order_by(VoteEvent.id).limit(limit)
    return list(session.execute(query).scalars())


def reader_votes(*, session: Session, subscriber_id: int) -> list[dict]:
    """A reader's standing votes, for their data export: comparison slug and title, tool, choice, when."""
    rows = session.execute(
        select(Comparison.slug, Comparison.title, Tool.name, Vote.tool_position, Vote.choice, Vote.cast_at)
        .join(Comparison, Comparison.id == Vote.comparison_id)
        .outerjoin(Tool, (Tool.comparison_id == Vote.comparison_id) & (Tool.position == Vote.tool_position))
        .where(Vote.subscriber_id == subscriber_id).order_by(Vote.cast_at, Vote.id))
    return [{"comparison": slug, "title": title, "tool": position + 1, "tool_name": name, "choice": choice,
             "cast_at": cast_at.isoformat()} for slug, title, name, position, choice, cast_at in rows]


def forget_votes(*, session: Session, subscriber_id: int) -> None:
    """A deleted reader's votes go with them (the tally drops them; the pseudonymous events stay)."""
    session.execute(delete(Vote).where(Vote.subscriber_id == subscriber_id))
