"""A new version of a comparison readers already got (issue 16, item 3): keep the version they got, and
record each tool whose panel verdict changed enough to tell them.

What "enough" means: the panel's majority flipped between ship and skip, or its ship % moved by
CHANGE_POINTS or more. A split panel (as many ship as skip) is neither side, so ship → split is a change
only when the % moved that far (3 of 4 ship → 2 of 4 is 75 % → 50 %: it is). Smaller moves — a
reviewer nudging a score, a typo fixed — change the site's page but are not news for an inbox.

What readers got last is, per tool, the version its last carried change showed them, or else the
version the first issue carried: told once of 75 % → 25 %, they are not told of it again, and a move
back to 75 % is a change of its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from storage.imports import ToolColumns
from storage.records import MindChange
from storage.revisions import (
    ToolSeen,
    from_json,
    to_json,
    add_change,
    drop_waiting_changes,
    keep_version,
    kept_content,
    what_readers_saw,
)

CHANGE_POINTS = 25  # a move of the panel's ship % worth an email (issue 16)


@dataclass(frozen=True)
class Panel:
    """One tool's panel in one version: its name, each seat's verdict in page order, and its ship %."""

    name: str
    verdicts: tuple[tuple[str, str], ...]  # (persona, "ship" or "skip")
    stated_pct: int | None  # the site's own panel_ship_pct, when it gives one

    @property
    def ship(self) -> int:
        return sum(verdict == "ship" for _, verdict in self.verdicts)

    @property
    def skip(self) -> int:
        return sum(verdict == "skip" for _, verdict in self.verdicts)

    @property
    def pct(self) -> int | None:
        """The site's figure, else the share of ship votes; None with neither."""
        if self.stated_pct is not None:
            return self.stated_pct
        seats = self.ship + self.skip
        return round(100 * self.ship / seats) if seats else None

    @property
    def majority(self) -> str | None:
        """ "ship", "skip", or None for a split or empty panel."""
        if self.ship == self.skip:
            return None
        return "ship" if self.ship > self.skip else "skip"


def panels(tools: ToolColumns) -> list[Panel]:
    """The panels of a comparison's tools, in page order, from the importer's shape."""
    return [Panel(name=columns["name"], verdicts=tuple((r["persona"], r["verdict"]) for r in reviews),
                  stated_pct=columns.get("panel_ship_pct")) for columns, reviews in tools]


def changed(before: Panel, after: Panel) -> bool:
    """Whether readers of ``before`` should hear of ``after``: a flip, or a move of CHANGE_POINTS or more."""
    flipped = {before.majority, after.majority} == {"ship", "skip"}
    moved = before.pct is not None and after.pct is not None and abs(after.pct - before.pct) >= CHANGE_POINTS
    return flipped or moved


def minds(before: Panel, after: Panel) -> tuple[MindChange, ...]:
    """The seats whose verdict differs, in the new page order, then those who left the panel."""
    old, new = dict(before.verdicts), dict(after.verdicts)
    turned = [MindChange(persona, old.get(persona), verdict) for persona, verdict in after.verdicts
              if old.get(persona) != verdict]
    return tuple(turned + [MindChange(persona, verdict, None) for persona, verdict in before.verdicts
                           if persona not in new])


def revise(*, session, comparison_id: int, version: int, before: tuple[dict, ToolColumns],
           after: ToolColumns, now: datetime) -> int:
    """Before claimed comparison ``comparison_id`` takes its next version (``version`` + 1): keep the
    current one (``before``, the importer's shape), and replace the changes still waiting with those of the
    new version against what readers saw last. Returns how many tools' verdicts changed."""
    keep_version(session=session, comparison_id=comparison_id, version=version, content=to_json(*before), now=now)
    drop_waiting_changes(session=session, comparison_id=comparison_id)
    new = panels(after)
    recorded = 0
    for seen in what_readers_saw(session=session, comparison_id=comparison_id, tools=len(new)):
        old = _panel_seen(session, seen, version=version, current=before[1])
        if old is None or seen.position >= len(new):
            continue
        fresh = new[seen.position]
        if old.name.casefold() != fresh.name.casefold() or not changed(old, fresh):
            continue  # another tool in that place is not a change of mind about this one
        add_change(session=session, comparison_id=comparison_id, seen=seen, after_version=version + 1,
                   before=(old.ship, old.skip, old.pct), after=(fresh.ship, fresh.skip, fresh.pct),
                   minds=json.dumps([[m.persona, m.before, m.after] for m in minds(old, fresh)]), now=now)
        recorded += 1
    return recorded


def _panel_seen(session, seen: ToolSeen, *, version: int, current: ToolColumns) -> Panel | None:
    """The panel of the tool readers saw: in the current version, or in the kept one they got."""
    if seen.version == version:
        tools = current
    else:
        content = kept_content(session=session, comparison_id=seen.comparison_id, version=seen.version)
        if content is None:
            return None
        tools = from_json(content)[1]
    return panels(tools)[seen.position] if seen.position < len(tools) else None

