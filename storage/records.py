"""Comparisons as storage hands them to the render stage: frozen plain data, read once inside a session.

Rendering never touches an ORM row (issue 15): nothing it reads can lazy-load, expire with its session, or
be written back by accident. The attribute names are the tables' (storage.models), so the templates and
`digest.render.email.strongest_opinion` read a record as they read a row.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class ReviewRecord:
    """One reviewer seat's take on one tool: Builder, Skeptic, Futurist or Founder."""

    persona: str
    score: int
    verdict: str  # "ship" or "skip"
    text: str = ""
    position: int = 0


@dataclass(frozen=True, slots=True)
class ToolRecord:
    """One tool of a comparison, its reviews in page order."""

    name: str
    tagline: str = ""
    summary: str = ""
    category: str = ""
    pricing: str = ""
    entry_price: str = ""
    panel_ship_pct: int | None = None
    community_ship_pct: int | None = None
    position: int = 0
    reviews: tuple[ReviewRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class ComparisonRecord:
    """One comparison as an email shows it: its tools in page order, each with its reviews."""

    id: int | None
    slug: str
    title: str
    url: str
    category: str
    published_at: datetime
    community_votes: int | None = None
    tools: tuple[ToolRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class MindChange:
    """One panellist whose verdict on a tool changed between the version readers got and the new one.
    ``before`` is None when they joined the panel, ``after`` None when they left it."""

    persona: str
    before: str | None
    after: str | None


@dataclass(frozen=True, slots=True)
class VerdictChangeRecord:
    """A tool's panel verdict that changed after readers got it (issue 16, item 3): the panel's tally and
    ship % in the version they got and in the new one, and who changed their mind. Carried by the next
    issue to the readers of ``original_week``, the issue that sent the comparison first."""

    id: int
    comparison_id: int
    slug: str
    title: str  # the comparison's title now
    url: str
    tool: str  # the tool's name now
    before_ship: int
    before_skip: int
    after_ship: int
    after_skip: int
    before_pct: int | None  # the panel's ship %
    after_pct: int | None
    original_week: str
    minds: tuple[MindChange, ...] = ()
