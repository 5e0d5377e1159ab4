"""Comparisons as the claim ranks them (plain facts) and as an email shows them (plain records with their tools
and reviews, storage.records)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import false, func, select
from sqlalchemy.orm import selectinload
from sqlmodel import Session

from digest.claim.selection import ComparisonFacts
from storage.models import Comparison, IssueComparison, Review, Tool
from storage.records import ComparisonRecord, ReviewRecord, ToolRecord
from storage.revisions import from_json, kept_versions


def _facts(session: Session, comparison_filter) -> list[ComparisonFacts]:
    rows = session.execute(
        select(Comparison.id, Comparison.category, Comparison.published_at, Comparison.community_votes)
        .where(comparison_filter)
    ).all()
    ids = [row.id for row in rows]
    pcts: dict[int, list[int]] = {comparison_id: [] for comparison_id in ids}
    if ids:
        for comparison_id, pct in session.execute(
            select(Tool.comparison_id, Tool.panel_ship_pct).where(Tool.comparison_id.in_(ids)).order_by(Tool.position)
        ):
            pcts[comparison_id].append(pct or 0)
    return [
        ComparisonFacts(id=row.id, category=row.category, published_at=row.published_at,
                        ship_pcts=tuple(pcts[row.id]), community_votes=row.community_votes or 0)
        for row in rows
    ]


def unclaimed(now: datetime):
    """Published by ``now`` and in no issue yet: what the claim takes (storage.issues.claim_comparisons) and the
    dry run lists. ``claimed`` narrows the search to an index range; issue_comparison stays the record."""
    claimed = select(IssueComparison.comparison_id).where(IssueComparison.comparison_id == Comparison.id)
    return (Comparison.claimed == false()) & (Comparison.published_at <= now) & ~claimed.exists()


def claimable_comparisons(*, session: Session, now: datetime) -> list[ComparisonFacts]:
    """Published by ``now`` and in no issue yet: what an issue opened now would claim."""
    return _facts(session, unclaimed(now))


def claimed_comparisons(*, session: Session, issue_id: int) -> list[ComparisonFacts]:
    claimed = select(IssueComparison.comparison_id).where(IssueComparison.issue_id == issue_id)
    return _facts(session, Comparison.id.in_(claimed))


def load_comparisons(*, session: Session, ids: Sequence[int]) -> list[ComparisonRecord]:
    """Comparisons with their tools and reviews, in the order of ``ids``: plain records, read in this session."""
    query = (
        select(Comparison)
        .where(Comparison.id.in_(list(ids)))
        .options(selectinload(Comparison.tools).selectinload(Tool.reviews))
    )
    by_id = {c.id: c for c in session.execute(query).scalars()}
    return [_comparison_record(by_id[i]) for i in ids if i in by_id]


def load_issue_comparisons(*, session: Session, issue_id: int, ids: Sequence[int]) -> list[ComparisonRecord]:
    """``load_comparisons`` as issue ``issue_id`` carried them: a comparison updated since shows the version
    the issue claimed (kept in comparison_version), so an issue reads the same from its first batch to its
    archive page. A version that was never kept (no newer one replaced it while claimed) is the current one."""
    return _as_claimed(session, ids, IssueComparison.issue_id == issue_id)


def load_claimed_comparisons(*, session: Session, ids: Sequence[int]) -> list[ComparisonRecord]:
    """``load_comparisons`` as the issues that claimed them carried them: a monthly issue (issue 19) claims
    nothing and shows each comparison as its own weekly issue did (a comparison is claimed once)."""
    return _as_claimed(session, ids, IssueComparison.comparison_id.in_(list(ids)))


def _as_claimed(session: Session, ids: Sequence[int], claims) -> list[ComparisonRecord]:
    current = load_comparisons(session=session, ids=ids)
    claimed = dict(session.execute(select(IssueComparison.comparison_id, IssueComparison.version)
                                   .where(claims)).all())
    rows = {row.id: row for row in session.execute(select(Comparison.id, Comparison.version)
                                                   .where(Comparison.id.in_(list(ids))))}
    older = {(cid, version) for cid, version in claimed.items() if cid in rows and rows[cid].version != version}
    kept = kept_versions(session=session, pairs=older)
    return [_kept_record(record, kept[(record.id, claimed[record.id])])
            if (record.id, claimed.get(record.id)) in kept else record for record in current]


def _kept_record(record: ComparisonRecord, content: str) -> ComparisonRecord:
    columns, tools = from_json(content)
    return ComparisonRecord(
        id=record.id, slug=record.slug, **columns,
        tools=tuple(ToolRecord(**tool, position=position,
                               reviews=tuple(ReviewRecord(**review, position=order) for order, review in enumerate(reviews)))
                    for position, (tool, reviews) in enumerate(tools)))


def _comparison_record(row: Comparison) -> ComparisonRecord:
    return ComparisonRecord(
        id=row.id, slug=row.slug, title=row.title, url=row.url, category=row.category,
        published_at=row.published_at, community_votes=row.community_votes,
        tools=tuple(_tool_record(tool) for tool in row.tools),
    )


def _tool_record(row: Tool) -> ToolRecord:
    return ToolRecord(
        name=row.name, tagline=row.tagline, summary=row.summary, category=row.category, pricing=row.pricing,
        entry_price=row.entry_price, panel_ship_pct=row.panel_ship_pct, community_ship_pct=row.community_ship_pct,
        position=row.position, reviews=tuple(_review_record(review) for review in row.reviews),
    )


def _review_record(row: Review) -> ReviewRecord:
    return ReviewRecord(persona=row.persona, score=row.score, verdict=row.verdict, text=row.text,
                        position=row.position)


def comparison_titles(*, session: Session, ids: Sequence[int]) -> dict[int, str]:
    """Each comparison's title by id (the dry run lists them); ids not in the store are left out."""
    if not ids:
        return {}
    return dict(session.execute(select(Comparison.id, Comparison.title).where(Comparison.id.in_(list(ids)))).all())


def comparisons_mark(*, session: Session) -> tuple:
    """(latest update, count) of the comparisons: changes whenever one is imported, changed or removed."""
    return tuple(session.execute(select(func.max(Comparison.updated_at), func.count(Comparison.id))).one())
