"""Versions of claimed comparisons and the verdict changes waiting for an issue (issue 16, item 3): the
reads and writes of digest.importing.revisions, in the importer's transaction (a Session or a Connection:
Core statements only)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, func, insert, select
from sqlmodel import Session

from storage.models import ComparisonVersion, IssueComparison, VerdictChange


def to_json(columns: dict, tools: list[tuple[dict, list[dict]]]) -> str:
    """A version as comparison_version keeps it: the importer's shape (storage.imports.ToolColumns),
    the publication time as ISO text."""
    stored = {**columns, "published_at": columns["published_at"].isoformat()}
    return json.dumps({"columns": stored, "tools": tools}, ensure_ascii=False, sort_keys=True)


def from_json(content: str) -> tuple[dict, list[tuple[dict, list[dict]]]]:
    data = json.loads(content)
    columns = {**data["columns"], "published_at": datetime.fromisoformat(data["columns"]["published_at"])}
    return columns, [(tool, reviews) for tool, reviews in data["tools"]]


@dataclass(frozen=True)
class ToolSeen:
    """What the readers of a comparison's first issue last saw of one of its tools: which version."""

    comparison_id: int
    position: int
    version: int
    origin_issue_id: int  # the issue that carried the comparison first: whose readers hear of a change


def keep_version(*, session: Session | Connection, comparison_id: int, version: int, content: str, now: datetime) -> None:
    """Keep ``version`` of a claimed comparison before a newer one replaces it (once: a version is kept as
    it was first replaced, and never changes after)."""
    kept = select(ComparisonVersion.id).where(ComparisonVersion.comparison_id == comparison_id,
                                              ComparisonVersion.version == version)
    if session.execute(kept).first() is None:
        session.execute(insert(ComparisonVersion).values(comparison_id=comparison_id, version=version, content=content,
                                                         created_at=now))


def kept_content(*, session: Session | Connection, comparison_id: int, version: int) -> str | None:
    query = select(ComparisonVersion.content).where(ComparisonVersion.comparison_id == comparison_id,
                                                    ComparisonVersion.version == version)
    return session.execute(query).scalar_one_or_none()


def kept_versions(*, session: Session | Connection, pairs: set[tuple[int, int]]) -> dict[tuple[int, int], str]:
    """The kept content of each (comparison id, version) in ``pairs`` that has one."""
    if not pairs:
        return {}
    ids = {comparison_id for comparison_id, _ in pairs}
    rows = session.execute(select(ComparisonVersion.comparison_id, ComparisonVersion.version, ComparisonVersion.content)
                           .where(ComparisonVersion.comparison_id.in_(ids)))
    return {(cid, version): content for cid, version, content in rows if (cid, version) in pairs}


def drop_waiting_changes(*, session: Session | Connection, comparison_id: int) -> None:
    """Forget the changes of this comparison no issue carried yet: a newer version measures them again."""
    session.execute(delete(VerdictChange).where(VerdictChange.comparison_id == comparison_id,
                                                VerdictChange.issue_id.is_(None)))


def what_readers_saw(*, session: Session | Connection, comparison_id: int, tools: int) -> list[ToolSeen]:
    """For each tool position below ``tools``: the version its last carried change showed, else the version
    the first issue carried. Empty when no issue claimed the comparison."""
    claim = session.execute(select(IssueComparison.issue_id, IssueComparison.version)
                            .where(IssueComparison.comparison_id == comparison_id)).first()
    if claim is None:
        return []
    last = (select(VerdictChange.tool_position, func.max(VerdictChange.id).label("id"))
            .where(VerdictChange.comparison_id == comparison_id, VerdictChange.issue_id.is_not(None))
            .group_by(VerdictChange.tool_position).subquery())
    told = dict(session.execute(select(VerdictChange.tool_position, VerdictChange.after_version)
                                .join(last, last.c.id == VerdictChange.id)).all())
    return [ToolSeen(comparison_id=comparison_id, position=position, version=told.get(position, claim.version),
                     origin_issue_id=claim.issue_id) for position in range(tools)]


def add_change(*, session: Session | Connection, comparison_id: int, seen: ToolSeen, after_version: int,
               before: tuple[int, int, int | None], after: tuple[int, int, int | None], minds: str,
               now: datetime) -> None:
    """A waiting change of one tool's verdict: (ship, skip, ship %) before and after, and the minds (JSON)."""
    session.execute(insert(VerdictChange).values(
        comparison_id=comparison_id, origin_issue_id=seen.origin_issue_id, tool_position=seen.position,
        before_version=seen.version, after_version=after_version, before_ship=before[0], before_skip=before[1],
        before_pct=before[2], after_ship=after[0], after_skip=after[1], after_pct=after[2], minds=minds,
        recorded_at=now))
