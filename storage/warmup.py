"""The warm-up's daily count of sends (issue 18, item 5; digest.send.warmup)."""

from __future__ import annotations

from sqlalchemy import select
from sqlmodel import Session

from storage.db import insert_on_conflict
from storage.models import SendDay


def reserve(*, session: Session, day: str, want: int, allowance: int) -> int:
    """Take up to ``want`` of ``day``'s remaining allowance; how many were granted (0: none left today).
    The day's row stays locked (PostgreSQL) until the claim commits: senders reserve one after another."""
    session.execute(insert_on_conflict(session, SendDay.__table__).values(day=day, used=0)
                    .on_conflict_do_nothing(index_elements=["day"]))  # the day's first sender makes the row
    row = session.execute(select(SendDay).where(SendDay.day == day).with_for_update()).scalar_one()
    granted = max(0, min(want, allowance - row.used))
    row.used += granted
    return granted


def give_back(*, session: Session, day: str, unused: int) -> None:
    """Return what a claim reserved but found no rows for."""
    if unused > 0:
        row = session.get(SendDay, day, with_for_update=True)
        row.used -= unused
