"""Read-only: the categories the comparisons in the store are filed under, as the subscriber pages offer them."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlmodel import Session

from storage.models import Comparison


def category_names(*, session: Session) -> list[str]:
    """Every distinct category name, as stored (any case and spacing)."""
    return list(session.execute(select(Comparison.category).distinct()).scalars().all())


def category_counts(*, session: Session) -> list[tuple[str, int]]:
    """Each stored category name with the number of comparisons filed under it."""
    return [(name, count) for name, count in
            session.execute(select(Comparison.category, func.count()).group_by(Comparison.category))]
