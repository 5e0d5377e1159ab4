"""The monthly email (issue 19): which weekly issues it covers, who reads it and what of it they already have,
and its fan-out — for digest.claim.monthly.

Keyword-only functions over a Session, inside the caller's transaction, like storage.issues.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import bindparam, func, select, text
from sqlmodel import Session

from storage.models import (
    Cadence,
    Issue,
    IssueComparison,
    IssueKind,
    Subscriber,
)
from storage.due import due_sql as due_expression
from storage.issues import in_audience
from storage.types import UTCDateTime

if TYPE_CHECKING:
    from digest.claim.local_time import DueTimes


def weekly_issues_to_cover(*, session: Session, since: datetime, now: datetime) -> list[tuple[int, str]]:
    """The weekly issues a monthly email opened ``now`` covers, (id, label) oldest first: fanned out (they went
    out) and not cancelled (an editor stopped it: the monthly email does not send it instead), opened between
    ``since`` and ``now``, and in no monthly email yet (any monthly issue's ``covers``)."""
    covered = {int(part) for (covers,) in session.execute(select(Issue.covers).where(
        Issue.kind == IssueKind.monthly.value)) for part in covers.split(",") if part}
    rows = session.execute(select(Issue.id, Issue.week).where(
        Issue.kind == IssueKind.weekly.value, Issue.fanned_out_at.is_not(None), Issue.cancelled_at.is_(None),
        Issue.created_at >= since, Issue.created_at <= now).order_by(Issue.id)).all()
    return [(issue_id, week) for issue_id, week in rows if issue_id not in covered]


def issue_of_comparisons(*, session: Session, issue_ids: Sequence[int]) -> dict[int, int]:
    """comparison id → the issue of ``issue_ids`` that claimed it (each comparison is claimed once)."""
    if not issue_ids:
        return {}
    return dict(session.execute(select(IssueComparison.comparison_id, IssueComparison.issue_id)
                                .where(IssueComparison.issue_id.in_(list(issue_ids)))).all())


def monthly_readers(*, session: Session, now: datetime) -> int:
    """Active, unpaused readers of the monthly email."""
    return session.execute(select(func.count()).select_from(Subscriber).where(in_audience(now, Cadence.monthly.value))).scalar_one()


# Which of the covered issues a reader has (bit k: covers[k]): a delivery that went out or is still going
# out. Not only 'sent', as storage.changes.got_sql asks: a reader who turned monthly while a covered issue
# was still sending (or paused) gets that issue, and must not get its comparisons again in the monthly one.
def _had_sql(covers: Sequence[int], *, reader: str) -> str:
    if not covers:
        return "0"
    return " + ".join(
        f"CASE WHEN EXISTS (SELECT 1 FROM delivery o WHERE o.subscriber_id = {reader} AND o.issue_id = :cover_{k} "
        f"AND o.status IN ('sent', 'pending', 'sending')) THEN {1 << k} ELSE 0 END" for k in range(len(covers)))


def _cover_parameters(covers: Sequence[int]) -> dict[str, int]:
    return {f"cover_{k}": issue_id for k, issue_id in enumerate(covers)}


_READERS = ("SELECT s.id, s.categories, s.timezone, {had} AS had FROM subscriber s WHERE s.status = 'active' "
            "AND s.cadence = 'monthly' AND (s.paused_until IS NULL OR s.paused_until <= :now)")


def monthly_audience(*, session: Session, now: datetime, covers: Sequence[int]) -> dict[tuple[str, int], int]:
    """The monthly readers (active, unpaused) counted by (categories followed, bits of ``covers`` they have)."""
    readers = _READERS.format(had=_had_sql(covers, reader="s.id"))
    statement = text(f"SELECT categories, had, count(*) FROM ({readers}) AS a GROUP BY categories, had").bindparams(
        bindparam("now", type_=UTCDateTime()))
    rows = session.execute(statement, {"now": now, **_cover_parameters(covers)})
    return {(categories, int(had)): count for categories, had, count in rows}


def fan_out_monthly(*, session: Session, issue_id: int, covers: Sequence[int], now: datetime,
                    segments: dict[tuple[str, int], int], due: DueTimes | None = None) -> int:
    """One pending delivery per monthly reader whose (categories, bits of ``covers`` they have) is a key of
    ``segments``, in that key's segment; a reader of any other key has nothing new and gets none.

    One INSERT … SELECT, as storage.issues.fan_out_segments: the readers never pass through Python. A plain INSERT
    on the unique (subscriber, issue): only the transaction that creates the issue inserts its deliveries,
    and a racing one fails on the issue's unique label first. ``due``: each row's due time by its reader's zone,
    rows inserted in due order (DIGEST_DELIVERY=local, as storage.issues.fan_out_segments).
    """
    if not segments:
        return 0
    arms, parameters = [], {}
    for number, ((categories, had), segment_id) in enumerate(sorted(segments.items())):
        arms.append(f"WHEN a.categories = :categories_{number} AND a.had = {int(had)} THEN {int(segment_id)}")
        parameters[f"categories_{number}"] = categories
    readers = _READERS.format(had=_had_sql(covers, reader="s.id"))
    due_sql, due_parameters, due_binds = due_expression(due, "a")
    due_sql = "CAST(NULL AS TIMESTAMP)" if due_sql == "NULL" else due_sql  # typed: PostgreSQL reads a bare NULL as text
    statement = text(
        "INSERT INTO delivery (issue_id, subscriber_id, segment_id, status, attempts, ambiguous_resends, created_at, "
        "due_at) SELECT :issue_id, r.id, r.segment_id, 'pending', 0, 0, :now, r.due_at FROM "
        f"(SELECT a.id, CASE {' '.join(arms)} END AS segment_id, {due_sql} AS due_at FROM ({readers}) AS a) AS r "
        "WHERE r.segment_id IS NOT NULL" + (" ORDER BY r.due_at, r.id" if due is not None else "")
    ).bindparams(bindparam("now", type_=UTCDateTime()), *due_binds)
    result = session.execute(statement, {"issue_id": issue_id, "now": now, **parameters, **_cover_parameters(covers),
                                         **due_parameters})
    return result.rowcount


def create_monthly_issue(*, session: Session, label: str, now: datetime, covers: Sequence[int]) -> Issue:
    """A new monthly issue row, flushed: a process racing to open the same month blocks here on the unique
    label, then fails (storage.faults.Conflict)."""
    issue = Issue(week=label, created_at=now, kind=IssueKind.monthly.value, covers=",".join(map(str, covers)))
    session.add(issue)
    session.flush()
    return issue


def issue_weeks(*, session: Session, ids: Sequence[int]) -> list[str]:
    """The labels of the issues ``ids``, in id order (what a monthly issue's ``covers`` names)."""
    if not ids:
        return []
    return list(session.execute(select(Issue.week).where(Issue.id.in_(list(ids))).order_by(Issue.id)).scalars())
