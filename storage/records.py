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
