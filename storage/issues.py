"""Issues: find them, claim what is published into one, rank it, and fan it out to its readers.

Keyword-only functions over a Session; each runs inside the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from datetime import datetime

from sqlalchemy import bindparam, func, literal, or_, select, text, update
from sqlmodel import Session

from storage.changes import got_sql, origin_parameters
from storage.comparisons import unclaimed
from storage.db import insert_on_conflict
from storage.models import (
    Cadence,
    Comparison,
    Delivery,
    Issue,
    IssueComparison,
    IssueKind,
    Segment,
    Subscriber,
    SubscriberStatus,
)
from storage.due import due_sql as due_expression
from storage.types import UTCDateTime

if TYPE_CHECKING:
    from digest.claim.local_time import DueTimes


def find_issue(*, session: Session, week: str) -> Issue | None:
    return session.execute(select(Issue).where(Issue.week == week)).scalars().first()


def unfinished_issues(*, session: Session) -> list[Issue]:
    """Issues fanned out but not finished: a crash or an outage left deliveries to send. A paused issue is not
    among them (only `digest issue resume` lifts a pause: issue 18), nor a cancelled one."""
    query = select(Issue).where(Issue.fanned_out_at.is_not(None), Issue.completed_at.is_(None),
                                Issue.paused_at.is_(None), Issue.cancelled_at.is_(None)).order_by(Issue.id)
    return list(session.execute(query).scalars())


def paused_issues(*, session: Session) -> list[Issue]:
    """Issues with deliveries left that are paused (and not cancelled): what the scheduler and the workers pass
    over until `digest issue resume` (issue 18), read so that they can say so."""
    query = select(Issue).where(Issue.fanned_out_at.is_not(None), Issue.completed_at.is_(None),
                                Issue.paused_at.is_not(None), Issue.cancelled_at.is_(None)).order_by(Issue.id)
    return list(session.execute(query).scalars())


def claim_comparisons(*, session: Session, issue_id: int, now: datetime) -> None:
    """Claim every published, unclaimed comparison (`storage.comparisons.unclaimed`) into the issue.

    ON CONFLICT DO NOTHING (the unique comparison_id is the table's one key besides its id): a comparison
    another issue claimed in a racing transaction is simply not ours.
    """
    mine = select(literal(issue_id), Comparison.id, Comparison.version).where(unclaimed(now))
    session.execute(insert_on_conflict(session, IssueComparison.__table__)  # rank: the column's default, until set_ranks
                    .from_select(["issue_id", "comparison_id", "version"], mine).on_conflict_do_nothing())
    ours = IssueComparison.issue_id == issue_id
    session.execute(update(Comparison.__table__).where(Comparison.id.in_(select(IssueComparison.comparison_id)
                                                                         .where(ours))).values(claimed=True))
    # The version claimed, read again now that the rows are ours: an import that held one (it locks what it
    # updates) has committed its version by now, and an issue carries the version it will show.
    session.execute(update(IssueComparison.__table__).where(ours).values(
        version=select(Comparison.version).where(Comparison.id == IssueComparison.comparison_id).scalar_subquery()))


def set_ranks(*, session: Session, issue_id: int, ranked_ids: Sequence[int]) -> None:
    """Number the issue's comparisons 0, 1, … in the order of ``ranked_ids`` (every one of them: no two share a
    rank, so the readers of the order need no tie-break). A comparison of another issue is left alone."""
    statement = (
        update(IssueComparison)
        .where(IssueComparison.issue_id == issue_id, IssueComparison.comparison_id == bindparam("cid"))
        .values(rank=bindparam("position"))
    )
    session.connection().execute(
        statement, [{"cid": cid, "position": position} for position, cid in enumerate(ranked_ids)]
    )


def in_audience(now: datetime, cadence: str):
    """The readers an issue of ``cadence`` goes to at ``now``: active, of that cadence, not paused."""
    return (Subscriber.status == SubscriberStatus.active.value) & (Subscriber.cadence == cadence) & or_(
        Subscriber.paused_until.is_(None), Subscriber.paused_until <= now
    )


def audience_category_sets(*, session: Session, now: datetime, cadence: str = Cadence.weekly.value) -> dict[str, int]:
    """Active, unpaused subscribers of ``cadence`` (a weekly issue's audience; issue 19) counted by the categories
    they follow."""
    rows = session.execute(
        select(Subscriber.categories, func.count()).where(in_audience(now, cadence)).group_by(Subscriber.categories)
    )
    return {categories: count for categories, count in rows}


@dataclass(frozen=True)
class FanOutTarget:
    """Where the readers following ``category_sets`` go: ``segment_id``, or, for a reader who got the original
    issues of some bits (storage.changes.got_sql over the fan-out's ``origins``), ``parts[bits]`` instead — the
    segment that carries their verdict changes or their readers' results (issues 16 and 17)."""

    category_sets: Sequence[str]
    segment_id: int
    parts: dict[int, int] | None = None


def fan_out_segments(*, session: Session, issue_id: int, targets: Sequence[FanOutTarget], now: datetime,
                     origins: Sequence[int], engaged_first: bool, due: DueTimes | None) -> None:
    """One pending delivery per active weekly reader following one of the targets' category sets, in the target's
    segment (a monthly reader gets the monthly issue instead: digest.claim.monthly). The segments' sizes are
    counted from the rows afterwards (`segment_sizes`).

    One INSERT … SELECT in the database: the audience of a million subscribers never passes through Python, and
    is read once, not once per segment. Rows are inserted in segment order (then as below), so one segment's rows
    are neighbours in the table: a batch's lease and record write a few pages, not a thousand.
    A plain INSERT: an issue's deliveries are only ever inserted in the transaction that creates the
    issue, so nothing can conflict — and if a planning bug ever put one subscriber in two segments, the
    unique (subscriber, issue) fails the whole opening loudly rather than drop a row. (ON CONFLICT DO NOTHING
    cost ~20 % of the fan-out on PostgreSQL: docs/benchmarks.md.)

    A target's ``parts``: decided in the same INSERT, so no delivery is written twice (issue 16).

    ``engaged_first`` (a warm-up, issue 18): within a segment, rows are inserted, so numbered and claimed, in the
    order of each reader's human opens and clicks, most first. It costs an index lookup per reader
    (event.subscriber_id), paid only while a new domain warms up, when lists are small and every send counts.

    ``due`` (DIGEST_DELIVERY=local, issue 19): each row's due time by its reader's zone, and a segment's rows in
    due order, so the readers of one due time are neighbours in the claim index and a claim leases them together.
    """
    parameters, binds, branches, every_set = origin_parameters(origins), [], [], []
    for k, target in enumerate(targets):
        segment = str(int(target.segment_id))
        if target.parts:
            cases = " ".join(f"WHEN {int(bits)} THEN {int(part)}" for bits, part in sorted(target.parts.items()))
            segment = f"CASE {got_sql(origins, reader='s.id')} {cases} ELSE {segment} END"
        parameters[f"sets_{k}"] = list(target.category_sets)
        binds.append(bindparam(f"sets_{k}", expanding=True))
        branches.append(f"WHEN s.categories IN :sets_{k} THEN {segment}")
        every_set += target.category_sets
    if not every_set:  # no reader to look for (and no CASE without branches)
        return
    if len(targets) == 1 and not targets[0].parts:  # one segment: no CASE to decide it
        segment, binds = str(int(targets[0].segment_id)), []
        del parameters["sets_0"]
    else:
        segment = f"CASE {' '.join(branches)} END"
    due_sql, due_parameters, due_binds = due_expression(due, "s")
    parameters.update(due_parameters)
    order = ["3"] if segment.startswith("CASE") else []  # the segment (PostgreSQL orders by no constant)
    if due is not None and due_sql.startswith("CASE"):  # else one due time for all
        order.append(due_sql)
    if order or engaged_first:  # one segment, one due time: the scan's own order (by id) is the one wanted
        order.append(_ENGAGEMENT if engaged_first else "s.id")
    statement = text(
        "INSERT INTO delivery (issue_id, subscriber_id, segment_id, status, attempts, ambiguous_resends, created_at, "
        f"due_at) SELECT :issue_id, s.id, {segment}, 'pending', 0, 0, :now, {due_sql} FROM subscriber s "
        "WHERE s.status = 'active' AND s.cadence = 'weekly' AND (s.paused_until IS NULL OR s.paused_until <= :now) "
        "AND s.categories IN :every_set" + (f" ORDER BY {', '.join(order)}" if order else "")
    ).bindparams(bindparam("every_set", expanding=True), bindparam("now", type_=UTCDateTime()), *binds, *due_binds)
    session.execute(statement, {"issue_id": issue_id, "now": now, "every_set": every_set, **parameters})


_ENGAGEMENT = ("(SELECT count(*) FROM event e WHERE e.subscriber_id = s.id AND e.machine = false "
               "AND e.kind IN ('open', 'click')) DESC, s.id")


def audience_zones(*, session: Session, now: datetime, cadence: str = Cadence.weekly.value) -> list[str | None]:
    """The time zones the audience of ``cadence`` lives in (None: readers who gave none), for local delivery."""
    query = select(Subscriber.timezone).where(in_audience(now, cadence)).distinct()
    return list(session.execute(query).scalars())


def segment_sizes(*, session: Session, issue_id: int) -> dict[int, int]:
    """Deliveries per segment of the issue, counted from the rows (the claim index answers it)."""
    rows = session.execute(select(Delivery.segment_id, func.count()).where(Delivery.issue_id == issue_id)
                           .group_by(Delivery.segment_id))
    return dict(rows.all())


def refresh_delivery_statistics(*, session: Session) -> None:
    """PostgreSQL: re-read delivery's statistics after a fan-out, in the fan-out's own transaction.

    A fan-out can multiply the table by ten in one transaction, long before autovacuum looks at it. With
    the old statistics the planner guesses a handful of an issue's rows are pending and plans the claim as
    "fetch them all, then sort" (2.4 s a batch at a million) instead of walking the claim index in order
    (3 ms). ANALYZE samples the rows this transaction inserted; it takes 0.2 s at a million.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("ANALYZE delivery"))


def segment_count(*, session: Session, issue_id: int) -> int:
    return session.execute(select(func.count()).select_from(Segment).where(Segment.issue_id == issue_id)).scalar_one()


def find_segment(*, session: Session, segment_id: int) -> Segment | None:
    return session.get(Segment, segment_id)


def complete_issue(*, session: Session, issue_id: int, now: datetime) -> None:
    """Mark the issue finished (every delivery closed), once: a later call keeps the first time."""
    issue = session.get(Issue, issue_id)
    if issue.completed_at is None:
        issue.completed_at = now


def create_issue(*, session: Session, week: str, now: datetime) -> Issue:
    """A new issue row, flushed: a process racing to open the same week blocks here on the unique week, then fails."""
    issue = Issue(week=week, created_at=now)
    session.add(issue)
    session.flush()
    return issue


def add_segment(*, session: Session, issue_id: int, key: str, audience: str, comparison_ids: Sequence[int],
                change_ids: Sequence[int] = (), reader_results: bool = False) -> Segment:
    segment = Segment(issue_id=issue_id, key=key, audience=audience, comparison_ids=",".join(map(str, comparison_ids)),
                      change_ids=",".join(map(str, change_ids)), reader_results=reader_results)
    session.add(segment)
    session.flush()
    return segment


# -- the archive's reads ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PublishedIssue:
    """An issue that went out, as the archive lists it."""

    week: str
    opened_at: datetime
    titles: tuple[str, ...]  # its comparisons' titles, in rank order


def published_issues(*, session: Session) -> list[PublishedIssue]:
    """Fanned-out weekly issues (an issue is public once it went out; a monthly one repeats them), newest first, each with its comparisons' titles
    in rank order."""
    issues = session.execute(
        select(Issue.id, Issue.week, Issue.created_at)
        .where(Issue.fanned_out_at.is_not(None), Issue.kind == IssueKind.weekly.value).order_by(Issue.week.desc())
    ).all()
    titles: dict[int, list[str]] = {issue.id: [] for issue in issues}
    if titles:
        rows = session.execute(
            select(IssueComparison.issue_id, Comparison.title)
            .join(Comparison)
            .where(IssueComparison.issue_id.in_(list(titles)))
            .order_by(IssueComparison.rank)  # per issue by the dict below
        )
        for issue_id, title in rows:
            titles[issue_id].append(title)
    return [PublishedIssue(week=issue.week, opened_at=issue.created_at, titles=tuple(titles[issue.id]))
            for issue in issues]


def ranked_comparison_ids(*, session: Session, issue_id: int) -> list[int]:
    """The issue's comparisons, best first: `set_ranks` numbered every one of them when the issue opened."""
    return list(session.execute(
        select(IssueComparison.comparison_id).where(IssueComparison.issue_id == issue_id).order_by(IssueComparison.rank)
    ).scalars())
