"""Readers' votes (issue 17): cast one, read the readers' tally, page through the events, a reader's own.

Event ids are handed out in commit order: on PostgreSQL a vote's transaction takes one advisory lock before
it writes its event, so no event commits after a later id (a reader paging by id, or the push's cursor,
would skip it for good). Votes are human clicks, a few a second at most: the lock costs nothing.
SQLite writes one transaction at a time anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, func, select
from sqlmodel import Session

from storage.events import MAX_ID
from storage.models import Comparison, Tool, Vote, VoteEvent
from storage.raw import Raw

_EVENT_ORDER_LOCK = 17_017  # pg_advisory_xact_lock key of the vote events' order


@dataclass(frozen=True)
class Votable:
    """A comparison a reader can vote on (one an issue carried): what the vote page shows."""

    id: int
    slug: str
    title: str
    url: str
    tools: tuple[str, ...]  # names, in page order: the link's tool n is tools[n - 1]


@dataclass(frozen=True)
class Reader:
    """What a vote link's POST needs of the subscriber its token names: whether the token fits the row
    (digest.links.RecipientRef.fits), whether they may vote (digest.votes.casting.why_not), and the issue of
    the delivery the token names when that delivery is theirs."""

    id: int
    link_tag: int
    accepts_untagged_links: bool
    status: str
    paused_until: datetime | None
    issue_id: int | None  # of the token's delivery, if it is this reader's; None for none (or another's)


def reader(*, session: Session | Connection, subscriber_id: int, delivery_id: int | None) -> Reader | None:
    """The subscriber ``subscriber_id`` as a vote needs them, with the issue of delivery ``delivery_id`` when it
    is theirs; None for no such subscriber. One statement on the driver's cursor, in the caller's transaction."""
    raw = Raw(session)
    rows = raw.fetch("SELECT s.id, s.link_tag, s.accepts_untagged_links, s.status, s.paused_until, d.issue_id "
                     "FROM subscriber s LEFT JOIN delivery d ON d.id = :d AND d.subscriber_id = s.id "
                     "WHERE s.id = :s", {"s": subscriber_id, "d": delivery_id})
    if not rows:
        return None
    found, link_tag, untagged, status, paused_until, issue_id = rows[0]
    return Reader(id=found, link_tag=link_tag, accepts_untagged_links=bool(untagged), status=status,
                  paused_until=raw.read_time(paused_until) if paused_until is not None else None, issue_id=issue_id)


def votable(*, session: Session | Connection, slug: str) -> Votable | None:
    """The comparison ``slug`` if an issue carried it (nothing else was ever in an email), else None."""
    rows = Raw(session).fetch(
        "SELECT c.id, c.slug, c.title, c.url, t.name FROM comparison c LEFT JOIN tool t ON t.comparison_id = c.id "
        "WHERE c.slug = :slug AND EXISTS (SELECT 1 FROM issue_comparison ic WHERE ic.comparison_id = c.id) "
        "ORDER BY t.position", {"slug": slug})
    if not rows:
        return None
    comparison_id, slug, title, url, _ = rows[0]
    return Votable(id=comparison_id, slug=slug, title=title, url=url,
                   tools=tuple(name for *_, name in rows if name is not None))


def standing_choice(*, session: Session, subscriber_id: int, comparison_id: int, position: int) -> str | None:
    query = select(Vote.choice).where(Vote.subscriber_id == subscriber_id, Vote.comparison_id == comparison_id,
                                      Vote.tool_position == position)
    return session.execute(query).scalar_one_or_none()


def cast(*, session: Session | Connection, subscriber_id: int, comparison: Votable, position: int, choice: str,
         issue_id: int | None, voter: str, now: datetime) -> str:
    """Record the reader's vote: "recorded" (their first on this tool), "changed" (the other choice
    replaces theirs, and the event says which it replaces) or "unchanged" (the same again: nothing written).

    On the driver's cursor (storage.raw): a vote is a few small statements, and SQLAlchemy's unit of work
    cost several times what they do, all of it inside the one write transaction SQLite allows at a time."""
    raw = Raw(session)
    locking = raw.dialect == "postgresql"
    if locking:
        raw.fetch("SELECT pg_advisory_xact_lock(:key)", {"key": _EVENT_ORDER_LOCK})
    tool = {"s": subscriber_id, "c": comparison.id, "p": position}
    standing = raw.fetch("SELECT choice, event_id FROM vote WHERE subscriber_id = :s AND comparison_id = :c "
                         "AND tool_position = :p" + (" FOR UPDATE" if locking else ""), tool)
    if standing and standing[0][0] == choice:
        return "unchanged"
    at = raw.time(now)
    (event_id,), = raw.fetch(
        "INSERT INTO vote_event (comparison, tool, choice, voter, cast_at, replaces) "
        "VALUES (:slug, :tool, :choice, :voter, :at, :replaces) RETURNING id",
        {"slug": comparison.slug, "tool": position + 1, "choice": choice, "voter": voter, "at": at,
         "replaces": standing[0][1] if standing else None})
    values = {**tool, "choice": choice, "issue": issue_id, "event": event_id, "at": at}
    if not standing:
        raw.run("INSERT INTO vote (subscriber_id, comparison_id, tool_position, choice, issue_id, event_id, cast_at) "
                "VALUES (:s, :c, :p, :choice, :issue, :event, :at)", values)
        return "recorded"
    raw.run("UPDATE vote SET choice = :choice, event_id = :event, cast_at = :at, issue_id = COALESCE(:issue, issue_id) "
            "WHERE subscriber_id = :s AND comparison_id = :c AND tool_position = :p", values)
    return "changed"


def tally(*, session: Session, comparison_id: int, position: int) -> tuple[int, int]:
    """(ship, skip) of this newsletter's readers for one tool."""
    rows = dict(session.execute(select(Vote.choice, func.count()).where(
        Vote.comparison_id == comparison_id, Vote.tool_position == position).group_by(Vote.choice)).all())
    return rows.get("ship", 0), rows.get("skip", 0)


def events_after(*, session: Session, after: int, limit: int) -> list[VoteEvent]:
    """The vote events with an id above ``after``, in order, at most ``limit``."""
    if after >= MAX_ID:  # none above it; and PostgreSQL refuses to compare its INTEGER with a larger number
        return []
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
