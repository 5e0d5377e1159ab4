"""Versions of the comparisons issues carried, and the verdict changes readers are told of (issue 16)."""

from datetime import datetime

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from storage.types import utc_column as _utc
from storage.types import utcnow


class ComparisonVersion(SQLModel, table=True):
    """A version of a claimed comparison that a newer one replaced (issue 16): what an issue carried stays
    what its archive page and its late senders show, and what a change of verdict is measured from.

    ``content`` is the version as JSON in the importer's shape (digest.importing.revisions). Only claimed
    comparisons keep old versions: one no issue carried was never read, and can still be deleted whole.
    """

    __tablename__ = "comparison_version"
    __table_args__ = (UniqueConstraint("comparison_id", "version"),)
    id: int | None = Field(default=None, primary_key=True)
    comparison_id: int = Field(foreign_key="comparison.id")
    version: int
    content: str
    created_at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))


class VerdictChange(SQLModel, table=True):
    """A tool's panel verdict that changed after readers got it (issue 16): its majority flipped between ship
    and skip, or its ship % moved by 25 points or more, between the version readers last saw and the newest.

    Waiting while ``issue_id`` is None; the next issue that opens with new comparisons carries it (sets
    ``issue_id``) to the readers of ``origin_issue_id``, the issue that sent the comparison first. A newer
    version replaces a waiting change; a carried one stays, and what it showed is what readers saw last.
    """

    __tablename__ = "verdict_change"
    id: int | None = Field(default=None, primary_key=True)
    comparison_id: int = Field(foreign_key="comparison.id", index=True)
    origin_issue_id: int = Field(foreign_key="issue.id")
    issue_id: int | None = Field(default=None, foreign_key="issue.id", index=True)
    tool_position: int
    before_version: int
    after_version: int
    before_ship: int
    before_skip: int
    after_ship: int
    after_skip: int
    before_pct: int | None = None
    after_pct: int | None = None
    minds: str = "[]"  # JSON: [[persona, verdict before or null, verdict after or null], …]
    recorded_at: datetime = Field(default_factory=utcnow, sa_column=_utc(nullable=False))
