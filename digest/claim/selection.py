"""Pure selection rules: which comparisons a subscriber sees, in what order, and how many.

No database here: plain data in, plain data out, so every rule is tested without one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

_SPACES = re.compile(r"\s+")


def category_key(name: str) -> str:
    """How a category is compared: case and spacing do not matter ("Developer  tools" == "developer tools")."""
    return _SPACES.sub(" ", name).strip().casefold()


def canonical_categories(names: Iterable[str]) -> str:
    """The stored form of the categories a subscriber follows: keys sorted, ";"-joined; "" = all."""
    keys = {category_key(name) for name in names}
    keys.discard("")
    return ";".join(sorted(keys))


def parse_categories(text: str, separator: str = ";") -> list[str]:
    """Split a user's list ("Developer Tools; Writing"), keeping their spelling, dropping blanks."""
    return [part.strip() for part in text.split(separator) if part.strip()]


def followed(canonical: str) -> frozenset[str]:
    """The category keys in a stored categories string; empty means every category."""
    return frozenset(part for part in canonical.split(";") if part)


@dataclass(frozen=True)
class ComparisonFacts:
    """What ranking and segmenting need to know of a comparison."""

    id: int
    category: str
    published_at: datetime
    ship_pcts: tuple[int, ...]  # the panel ship % of each tool, None read as 0
    community_votes: int = 0


def decisiveness(facts: ComparisonFacts) -> int:
    """How clearly the panel picked a winner: best tool's ship % minus the worst's (0–100)."""
    if not facts.ship_pcts:
        return 0
    return max(facts.ship_pcts) - min(facts.ship_pcts)


def rank(comparisons: Iterable[ComparisonFacts]) -> list[ComparisonFacts]:
    """Order an issue's comparisons, most worth reading first.

    Readers open the digest to learn which tool to ship with, so a verdict with a clear winner leads: a
    100% vs 25% split tells them more than 75% vs 75%. Ties go to what readers already care about
    (community votes), then to the newest, then to the id so the order never depends on the database.
    """
    return sorted(
        comparisons,
        key=lambda c: (-decisiveness(c), -c.community_votes, -c.published_at.timestamp(), c.id),
    )


@dataclass(frozen=True)
class SegmentPlan:
    """One distinct email of an issue: the comparisons a group of subscribers sees, rendered once."""

    key: str
    comparison_ids: tuple[int, ...]  # every comparison this group sees, in rank order (shown + "more")
    audience: str  # why they get it: "all categories" or the followed categories in this issue
    category_sets: tuple[str, ...]  # the stored categories strings of the subscribers in this segment


def visible_to(ranked: Sequence[ComparisonFacts], categories: str) -> list[ComparisonFacts]:
    """The comparisons a subscriber following ``categories`` sees ("" = every category)."""
    keys = followed(categories)
    if not keys:
        return list(ranked)
    return [c for c in ranked if category_key(c.category) in keys]


def audience_label(ranked: Sequence[ComparisonFacts], categories: str) -> str:
    """Why a subscriber gets this issue, in words: the categories they follow that it covers."""
    keys = followed(categories)
    if not keys:
        return "all categories"
    names: dict[str, str] = {}
    for facts in ranked:  # the site's spelling of each followed category, in rank order
        names.setdefault(category_key(facts.category), facts.category)
    shown = [names[key] for key in names if key in keys]
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


def plan_segments(ranked: Sequence[ComparisonFacts], category_sets: Iterable[str]) -> list[SegmentPlan]:
    """Group subscribers' category sets by the email they will get; sets that see nothing get none.

    Different category sets often see the same comparisons (following "writing;security" in a week with
    no security verdict is the same as following "writing"), so the number of segments is bounded by
    the issue's categories, not by the subscribers.
    """
    groups: dict[tuple[tuple[int, ...], str], list[str]] = {}
    for categories in category_sets:
        visible = visible_to(ranked, categories)
        if not visible:
            continue
        ids = tuple(c.id for c in visible)
        groups.setdefault((ids, audience_label(ranked, categories)), []).append(categories)
    return [
        SegmentPlan(key=segment_key(ids, audience), comparison_ids=ids, audience=audience,
                    category_sets=tuple(sorted(sets)))
        for (ids, audience), sets in sorted(groups.items())
    ]


def segment_key(comparison_ids: Sequence[int], audience: str) -> str:
    digest = hashlib.sha256(f"{','.join(map(str, comparison_ids))}|{audience}".encode()).hexdigest()
    return digest[:32]


def cap(comparison_ids: Sequence[int], limit: int) -> tuple[tuple[int, ...], int]:
    """The first ``limit`` comparisons shown in full, and how many more the "and K more" line covers.

    Eight by default: past that the email nears Gmail's ~102 KB clipping point and readers stop
    scrolling; the rest are one link away on the site.
    """
    return tuple(comparison_ids[:limit]), max(0, len(comparison_ids) - limit)
