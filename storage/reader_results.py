"""The readers' votes on an issue's comparisons, tool by tool (issue 17): what the next issue tells the
readers who got it (digest.votes.results)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import case, func, select
from sqlmodel import Session

from storage.models import Comparison, Delivery, Issue, IssueComparison, IssueKind, Tool, Vote


@dataclass(frozen=True)
class ToolVotes:
    comparison_id: int
    title: str
    url: str
    position: int
    tool: str
    ship: int
    skip: int


def previous_issue(*, session: Session, week: str) -> Issue | None:
    """The last weekly issue before ``week`` that went out (fanned out): whose readers voted on what it carried.
    Never a monthly issue (issue 19): it repeats weekly issues' comparisons, and its label ("2026-M12") does not
    sort among the weeks'."""
    query = (select(Issue).where(Issue.week < week, Issue.fanned_out_at.is_not(None),
                                 Issue.kind == IssueKind.weekly.value)
             .order_by(Issue.week.desc()).limit(1))
    return session.execute(query).scalars().first()


def votes_on_issue(*, session: Session, issue_id: int) -> list[ToolVotes]:
    """Every tool of the comparisons ``issue_id`` carried, in rank then page order, with this newsletter's
    readers' ship and skip votes (0 and 0 for a tool nobody voted on)."""
    counts = (select(Vote.comparison_id, Vote.tool_position,
                     func.sum(case((Vote.choice == "ship", 1), else_=0)).label("ship"),
                     func.count().label("votes"))
              .group_by(Vote.comparison_id, Vote.tool_position).subquery())
    rows = session.execute(
        select(Comparison.id, Comparison.title, Comparison.url, Tool.position, Tool.name, counts.c.ship, counts.c.votes)
        .join(IssueComparison, IssueComparison.comparison_id == Comparison.id)
        .join(Tool, Tool.comparison_id == Comparison.id)
        .outerjoin(counts, (counts.c.comparison_id == Comparison.id) & (counts.c.tool_position == Tool.position))
        .where(IssueComparison.issue_id == issue_id)
        .order_by(IssueComparison.rank, IssueComparison.id, Tool.position))
    return [ToolVotes(comparison_id=cid, title=title, url=url, position=position, tool=name, ship=int(ship or 0),
                      skip=int(votes or 0) - int(ship or 0)) for cid, title, url, position, name, ship, votes in rows]


def got_issue(*, session: Session, issue_id: int, subscriber_id: int) -> bool:
    """Whether the reader got issue ``issue_id`` (a sent delivery)."""
    query = select(Delivery.id).where(Delivery.issue_id == issue_id, Delivery.subscriber_id == subscriber_id,
                                      Delivery.status == "sent")
    return session.execute(query).first() is not None
