"""Verdict changes as issues carry them (issue 16, item 3): claimed by the next issue that opens, carried
to the readers who got the original, and read back as records for the email and the archive.

Who got the original is who has a *sent* delivery of the issue that first carried the comparison. The
fan-out puts each reader of the new issue in a segment by what they see (their categories) and by which
of those original issues they got: a bit per original issue (``got_sql``), so the fan-out's one INSERT
decides it for a million readers without any of them passing through Python.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import bindparam, select, text, update
from sqlmodel import Session

from storage.models import Comparison, Delivery, Issue, Segment, Tool, VerdictChange
from storage.records import MindChange, VerdictChangeRecord
from storage.types import UTCDateTime

# Original issues one issue carries changes for: one bit each in a 64-bit integer. Changes of older
# issues beyond these wait for the next issue (more than sixty issues' verdicts changing in one week
# would be a site rebuilding its history, not news).
MAX_ORIGINS = 60


def claim_changes(*, session: Session, issue_id: int) -> list[tuple[int, int]]:
    """Take the waiting changes into ``issue_id``; their (id, original issue id), oldest first."""
    waiting = session.execute(select(VerdictChange.id, VerdictChange.origin_issue_id)
                              .where(VerdictChange.issue_id.is_(None)).order_by(VerdictChange.id)).all()
    origins = sorted({origin for _, origin in waiting})[-MAX_ORIGINS:]
    taken = [(change_id, origin) for change_id, origin in waiting if origin in origins]
    if taken:
        session.execute(update(VerdictChange).where(VerdictChange.id.in_([cid for cid, _ in taken]))
                        .values(issue_id=issue_id))
    return taken


def got_sql(origins: Sequence[int], *, reader: str) -> str:
    """SQL: which of ``origins`` the subscriber ``reader`` (a column) got, as bits (bit k: origins[k]), with
    the parameters ``origin_parameters`` names."""
    return " + ".join(
        f"CASE WHEN EXISTS (SELECT 1 FROM delivery o WHERE o.subscriber_id = {reader} "
        f"AND o.issue_id = :origin_{k} AND o.status = 'sent') THEN {1 << k} ELSE 0 END"
        for k in range(len(origins)))


def origin_parameters(origins: Sequence[int]) -> dict[str, int]:
    return {f"origin_{k}": origin for k, origin in enumerate(origins)}


def audience_got(*, session: Session, now, origins: Sequence[int]) -> dict[tuple[str, int], int]:
    """The weekly audience (active, unpaused) counted by (categories followed, bits of ``origins`` they got)."""
    statement = text(
        f"SELECT categories, got, count(*) FROM (SELECT s.categories, {got_sql(origins, reader='s.id')} AS got "
        "FROM subscriber s WHERE s.status = 'active' AND s.cadence = 'weekly' AND (s.paused_until IS NULL OR s.paused_until <= :now)) AS a "
        "GROUP BY categories, got").bindparams(bindparam("now", type_=UTCDateTime()))
    rows = session.execute(statement, {"now": now, **origin_parameters(origins)})
    return {(categories, got): count for categories, got, count in rows}


def load_changes(*, session: Session, ids: Sequence[int]) -> list[VerdictChangeRecord]:
    """The changes ``ids`` as records, in the order of ``ids``; the comparison's and tool's names as they
    are now, the week of the issue that first carried it."""
    if not ids:
        return []
    query = (select(VerdictChange, Comparison.slug, Comparison.title, Comparison.url, Tool.name, Issue.week)
             .join(Comparison, Comparison.id == VerdictChange.comparison_id)
             .join(Issue, Issue.id == VerdictChange.origin_issue_id)
             .outerjoin(Tool, (Tool.comparison_id == VerdictChange.comparison_id)
                        & (Tool.position == VerdictChange.tool_position))
             .where(VerdictChange.id.in_(list(ids))))
    by_id = {row[0].id: _record(*row) for row in session.execute(query)}
    return [by_id[change_id] for change_id in ids if change_id in by_id]


def carried_change_ids(*, session: Session, issue_id: int) -> list[int]:
    """Every change ``issue_id`` carried, in the order they were recorded (the archive shows them all)."""
    return list(session.execute(select(VerdictChange.id).where(VerdictChange.issue_id == issue_id)
                                .order_by(VerdictChange.id)).scalars())


def waiting_changes(*, session: Session) -> list[VerdictChangeRecord]:
    """The changes no issue carried yet, in the order they were recorded (the dry run lists them)."""
    ids = session.execute(select(VerdictChange.id).where(VerdictChange.issue_id.is_(None))
                          .order_by(VerdictChange.id)).scalars().all()
    return load_changes(session=session, ids=ids)


def change_ids_for(*, session: Session, issue_id: int | None, subscriber_id: int | None) -> list[int]:
    """The changes a reader gets with issue ``issue_id`` (the preview's question): those of their delivery's
    segment once the issue is open, else the waiting changes of the issues they got. Without a reader (the
    preview's sample reader) every change the issue carries or would carry."""
    if issue_id is not None:
        if subscriber_id is None:
            return carried_change_ids(session=session, issue_id=issue_id)
        stored = session.execute(select(Segment.change_ids).join(Delivery, Delivery.segment_id == Segment.id)
                                 .where(Delivery.issue_id == issue_id, Delivery.subscriber_id == subscriber_id)).scalar()
        return [int(part) for part in (stored or "").split(",") if part]
    query = select(VerdictChange.id).where(VerdictChange.issue_id.is_(None)).order_by(VerdictChange.id)
    if subscriber_id is not None:
        got = select(Delivery.id).where(Delivery.issue_id == VerdictChange.origin_issue_id, Delivery.status == "sent",
                                        Delivery.subscriber_id == subscriber_id).exists()
        query = query.where(got)
    return list(session.execute(query).scalars())


def waiting_origins(*, session: Session) -> list[int]:
    """The issues whose readers the waiting changes are for."""
    query = select(VerdictChange.origin_issue_id).where(VerdictChange.issue_id.is_(None)).distinct()
    return sorted(session.execute(query).scalars())


def _record(change: VerdictChange, slug: str, title: str, url: str, tool: str | None, week: str) -> VerdictChangeRecord:
    return VerdictChangeRecord(
        id=change.id, comparison_id=change.comparison_id, slug=slug, title=title, url=url,
        tool=tool or f"Tool {change.tool_position + 1}", before_ship=change.before_ship,
        before_skip=change.before_skip, after_ship=change.after_ship, after_skip=change.after_skip,
        before_pct=change.before_pct, after_pct=change.after_pct, original_week=week,
        minds=tuple(MindChange(persona, before, after) for persona, before, after in json.loads(change.minds or "[]")))


def readers_of(*, session: Session, issue_ids: Sequence[int], now) -> int:
    """Readers who got one of ``issue_ids`` (a sent delivery) and are in the audience now (active, not
    paused): who hears of a change of those issues' verdicts, if the next issue reaches them."""
    if not issue_ids:
        return 0
    statement = text(
        "SELECT count(*) FROM subscriber s WHERE s.status = 'active' AND s.cadence = 'weekly' "
        "AND (s.paused_until IS NULL OR s.paused_until <= :now) AND EXISTS (SELECT 1 FROM delivery d "
        "WHERE d.subscriber_id = s.id AND d.issue_id IN :issue_ids AND d.status = 'sent')"
    ).bindparams(bindparam("issue_ids", expanding=True), bindparam("now", type_=UTCDateTime()))
    return session.execute(statement, {"issue_ids": list(issue_ids), "now": now}).scalar_one()
