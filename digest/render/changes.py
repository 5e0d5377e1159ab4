"""Verdicts that changed (issue 16, item 3), as the email shows them: one view per comparison, its tools' panel
before and after, and who changed their mind.

Pure functions over `VerdictChangeRecord`s: the templates only show what is computed here, and the exact
wording of the section's lines (``Cellmind: ship → skip``, ``Panel: 3 ship / 1 skip → 1 ship / 3 skip (75% →
25% ship)``, ``Skeptic, Builder: ship → skip · Founder joined: ship · Futurist left``) lives here, once, for the HTML
and the text part alike. Every stored text is clipped here; escaping is autoescape's (never ``|safe``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from digest.render.text import Tagged, clip
from digest.render.verdicts import Tally
from storage.records import MindChange, VerdictChangeRecord

# What the section shows: at most MAX_CHANGES_SHOWN comparisons and MAX_TOOLS_SHOWN tools' lines, whole
# comparisons in their order (the first always); the rest are one "And N more verdicts changed" link to the
# site. Why: Gmail clips HTML past ~102 KB, the email's budget is 90 KB at ten maximal comparisons, and this
# section gets 4,000 bytes of it. At the contract's maximum lengths a tool's three lines cost ~215 bytes, a
# comparison's title and tracked link ~240, the section itself ~1.8 KB (mj-section markup, heading, the "more"
# link): three comparisons of two tools fit (~3.8 KB, the worst case), 4 + 2 tools too (~3.4 KB); two of four
# tools do not (~4.0 KB), nor would four comparisons (5 KB and up). tests/test_changes_render.py measures it.
MAX_CHANGES_SHOWN = 3
MAX_TOOLS_SHOWN = 6

# A title here is a reminder of a verdict the reader has seen, not the card's h2: one line of a phone screen
# (~60 characters at 15 px on 375 px). 60 rather than 80 keeps ~20 bytes per comparison for the budget.
TITLE_MAX = 60

# A tool's name on its "Cellmind: ship → skip" line, a line of its own on a phone beside the 11 characters of
# the verdicts; the decision line's 40 (digest.render.verdicts) would cost ~60 bytes more at six tools.
NAME_MAX = 30

# A panellist's seat as the seat table shows it (templates/email/partials/tools.mjml.j2).
PERSONA_MAX = 12

_WEEK = re.compile(r"\d{4}-W(\d{1,2})")


@dataclass(frozen=True)
class ToolChange:
    """One tool whose panel verdict changed: three lines, each ready to show."""

    name: str
    majority: str  # "Cellmind: ship → skip"; "Cellmind: still ship" when only the ship % moved
    panel: str  # "Panel: 3 ship / 1 skip → 1 ship / 3 skip (75% → 25% ship)"
    minds: str  # "Skeptic, Builder: ship → skip · Founder joined: ship"; "" when nobody is named


@dataclass(frozen=True)
class ComparisonChange:
    """A comparison readers got whose panel changed its mind on one or more of its tools."""

    title: str
    link: Tagged
    sent: str  # "first sent in Week 44"
    tools: tuple[ToolChange, ...]


@dataclass(frozen=True)
class Changes:
    """The section: the comparisons shown (at most MAX_CHANGES_SHOWN) and how many more changed. False when
    there is nothing to show, so the templates leave the section out."""

    shown: tuple[ComparisonChange, ...] = ()
    more_count: int = 0

    def __bool__(self) -> bool:
        return bool(self.shown)

    @property
    def more(self) -> str:
        """ "And 2 more verdicts changed" ("" when none): a verdict is a comparison, as in "3 verdicts this week"."""
        if not self.more_count:
            return ""
        return f"And {self.more_count} more {'verdict' if self.more_count == 1 else 'verdicts'} changed"


def majority(tally: Tally) -> str:
    """ "ship" with more ship than skip votes, "skip" with more skip, "split" when equal (no votes too)."""
    if tally.ship == tally.skip:
        return "split"
    return "ship" if tally.ship > tally.skip else "skip"


def minds_line(minds: Sequence[MindChange]) -> str:
    """Who changed their mind, those who made the same change named together, in the order first met:
    "Skeptic, Builder: ship → skip · Founder joined: ship · Futurist left". Grouped because the usual change
    is several seats flipping the same way, and each repeat of "ship → skip" costs ~17 bytes of the section's
    4,000 (MAX_CHANGES_SHOWN)."""
    groups: dict[tuple[str | None, str | None], list[str]] = {}
    for mind in minds:
        groups.setdefault((mind.before, mind.after), []).append(clip(mind.persona, PERSONA_MAX))
    return " · ".join(_change(", ".join(names), before, after) for (before, after), names in groups.items())


def _change(who: str, before: str | None, after: str | None) -> str:
    """ "Skeptic: ship → skip"; "Founder joined: ship" (no verdict before); "Futurist left" (none after)."""
    if before is None:
        return f"{who} joined: {after}"
    if after is None:
        return f"{who} left"
    return f"{who}: {before} → {after}"


def week_words(week: str) -> str:
    """ "2026-W44" as "Week 44"; anything else, clipped, as it is."""
    match = _WEEK.fullmatch(week.strip())
    return f"Week {int(match[1])}" if match else clip(week, 12)


def tool_change(record: VerdictChangeRecord) -> ToolChange:
    before = Tally(ship=record.before_ship, skip=record.before_skip)
    after = Tally(ship=record.after_ship, skip=record.after_skip)
    name = clip(record.tool, NAME_MAX)
    was, now = majority(before), majority(after)
    panel = f"{before.line} → {after.line.removeprefix('Panel: ')}"  # the house format, from Tally
    if record.before_pct is not None and record.after_pct is not None:
        panel += f" ({record.before_pct}% → {record.after_pct}% ship)"
    return ToolChange(name=name, majority=f"{name}: {was} → {now}" if was != now else f"{name}: still {now}",
                      panel=panel, minds=minds_line(record.minds))


def change_views(changes: Sequence[VerdictChangeRecord], *, link: Callable[[str], Tagged],
                 capped: bool = True) -> Changes:
    """The section for ``changes``: one view per comparison, in the order of its first record, its tools in
    their records' order; the comparison's title, link and week are its first record's. Capped by
    MAX_CHANGES_SHOWN and MAX_TOOLS_SHOWN (the first comparison that does not fit ends the list) unless
    ``capped`` is False: the web version is a page, with no clipping to fit under."""
    grouped: dict[int, list[VerdictChangeRecord]] = {}
    for record in changes:
        grouped.setdefault(record.comparison_id, []).append(record)
    shown: list[ComparisonChange] = []
    tools = 0
    for records in grouped.values():
        full = len(shown) == MAX_CHANGES_SHOWN or (shown and tools + len(records) > MAX_TOOLS_SHOWN)
        if capped and full:
            break
        tools += len(records)
        shown.append(comparison_change(records, link=link))
    return Changes(shown=tuple(shown), more_count=len(grouped) - len(shown))


def comparison_change(records: Sequence[VerdictChangeRecord], *, link: Callable[[str], Tagged]) -> ComparisonChange:
    first = records[0]
    return ComparisonChange(title=clip(first.title, TITLE_MAX), link=link(first.url),
                            sent=f"first sent in {week_words(first.original_week)}",
                            tools=tuple(tool_change(record) for record in records))
