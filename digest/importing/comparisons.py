"""Comparison import: the JSON file the comparison site hands over (contracts/comparison.schema.json).

The file is checked whole before anything is written (digest.importing.comparison_file): one bad item
refuses the file, with every problem listed by item, slug and field. A good file is imported in one
transaction, upserting by slug.

Text is stored exactly as the file gives it — markup, ``{{ }}``, emoji, right-to-left — because it is
the site's words; escaping is the renderer's job (Jinja autoescape), not the importer's.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from digest.categories import category_problem
from digest.importing.comparison_file import load_comparisons, parse_published_at
from digest.importing.revisions import revise
from digest.progress import NullProgress, Progress
from storage.catalog import category_counts
from storage.db import session_scope
from storage.imports import (
    COMPARISON_COLUMNS, REVIEW_COLUMNS, TOOL_COLUMNS, ToolColumns, create_comparison, stored_comparisons,
    update_comparison,
)

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine
    from sqlmodel import Session


PROGRESS_ITEMS = 100  # items per progress report: reports go per batch, never per item (digest.progress)

COMPARISON_FIELDS = {"title": None, "url": None, "category": None, "published_at": None, "community_votes": None}
TOOL_FIELDS = {"name": None, "tagline": "", "summary": "", "category": "", "pricing": "", "entry_price": "",
               "panel_ship_pct": None, "community_ship_pct": None}  # field: value when the file leaves it out
REVIEW_FIELDS = {"persona": None, "score": None, "verdict": None, "text": None}
# What is stored is compared with these in that shape: the same fields, in the same order.
assert (tuple(COMPARISON_FIELDS), tuple(TOOL_FIELDS), tuple(REVIEW_FIELDS)) == (
    COMPARISON_COLUMNS, TOOL_COLUMNS, REVIEW_COLUMNS)


@dataclass(frozen=True)
class ComparisonImport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    verdicts_changed: int = 0  # tools of updated, already sent comparisons whose verdict changed (revisions)


def import_comparisons(*, engine: Engine, path: Path, now: datetime,
                       progress: Progress | None = None) -> ComparisonImport:
    """Upsert the comparisons of ``path`` by slug, in one transaction; raises InvalidImport, writing nothing.

    A known slug gets the file's title, url, category, published_at and community_votes, and its tools
    and reviews are replaced: its next version (digest.importing.revisions keeps the one an issue carried
    and records the verdicts that changed); ``created_at`` stays, ``updated_at`` becomes ``now``. An item identical to
    what is stored is left alone (counted as unchanged). ``progress`` hears of the items written, once
    every PROGRESS_ITEMS, after the file passed every check.
    """
    items = load_comparisons(path)
    progress = progress or NullProgress()
    progress.begin(path.name, total=len(items), unit="imported")
    try:
        counts = _upsert(engine=engine, items=items, now=now, progress=progress)
    finally:
        progress.end()
    return ComparisonImport(**counts)


def store_comparison(*, engine: Engine, item: dict, now: datetime) -> str:
    """Upsert one comparison that passed ``comparison_file.comparison_problems`` (the push API's body,
    digest.web.api) by the rules of a file's items; "created", "updated" or "unchanged"."""
    counts = _upsert(engine=engine, items=[item], now=now, progress=NullProgress())
    return next(outcome for outcome in ("created", "updated", "unchanged") if counts[outcome])


def store_checked(*, session: Session, items: list[dict], now: datetime) -> ComparisonImport:
    """Upsert items that passed the file's checks (``comparison_file.checked_comparisons``) in the caller's
    transaction: the pulled feed (digest.importing.feed) commits them with what the feed answered."""
    return ComparisonImport(**_upsert_in(session=session, items=items, now=now, progress=NullProgress()))


def _upsert(*, engine: Engine, items: list[dict], now: datetime, progress: Progress) -> Counter[str]:
    with engine.begin() as connection:  # Core statements only: no ORM session to set up (a push is 0.2 ms)
        counts = _upsert_in(session=connection, items=items, now=now, progress=progress)
    progress.advance(len(items) % PROGRESS_ITEMS)  # the rest, once they are committed
    return counts


def _upsert_in(*, session: Session | Connection, items: list[dict], now: datetime, progress: Progress) -> Counter[str]:
    counts: Counter[str] = Counter()
    stored = stored_comparisons(session=session, slugs=[item["slug"] for item in items])
    for done, item in enumerate(items, 1):
        columns, tools = _columns(item), _tools(item)
        current = stored.get(item["slug"])
        if current is None:
            create_comparison(session=session, slug=item["slug"], columns=columns, tools=tools, now=now)
            counts["created"] += 1
        elif (current.columns, current.tools) == (columns, tools):
            counts["unchanged"] += 1
        else:
            if current.claimed:  # readers got a version of it: keep that one, and see what changed for them
                counts["verdicts_changed"] += revise(session=session, comparison_id=current.id,
                                                     version=current.version, before=(current.columns, current.tools),
                                                     after=tools, now=now)
            update_comparison(session=session, comparison=current, columns=columns, tools=tools, now=now)
            counts["updated"] += 1
        if done % PROGRESS_ITEMS == 0:
            progress.advance(PROGRESS_ITEMS)
    return counts


def refused_categories(engine: Engine) -> dict[str, int]:
    """Categories in the store that the contract now refuses, with how many comparisons carry each.

    Comparisons imported before the contract forbade ``;``, ``,`` and line breaks may carry one. Nobody
    can follow such a category on its own (the signup and the preference form do not offer it); readers
    of every category still get those comparisons. Importing them again with a good name fixes them.
    """
    with session_scope(engine) as session:
        counts = category_counts(session=session)
    return {name: count for name, count in counts if category_problem(name)}


# -- the file's items in the stored shape ----------------------------------------------------------------

def _columns(item: dict) -> dict:
    columns = {field: item.get(field, default) for field, default in COMPARISON_FIELDS.items()}
    columns["published_at"] = parse_published_at(item["published_at"])
    return columns


def _tools(item: dict) -> ToolColumns:
    return [({field: tool.get(field, default) for field, default in TOOL_FIELDS.items()},
             [{field: review[field] for field in REVIEW_FIELDS} for review in tool["reviews"]])
            for tool in item["tools"]]
