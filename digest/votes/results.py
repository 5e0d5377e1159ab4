"""What the readers voted on the previous issue, as the next one tells them (issue 17, item 5):
"Readers: 62% would ship Cellmind", a line per comparison they voted on.

Figured once, when the next issue opens, and kept with it (issue.reader_results): every batch, every
worker and the archive then show the same figures, however the votes move during the send.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from storage.reader_results import ToolVotes

# A share of votes below this many voters is noise, not a verdict: "100% would ship" from two clicks would
# mislead. The comparison's line waits for more votes (it is simply left out).
MIN_VOTES = 5


@dataclass(frozen=True)
class ReaderResult:
    """The readers' verdict on one comparison: the tool with the largest share of ship votes."""

    comparison_id: int
    title: str
    url: str
    tool: str
    pct: int  # of that tool's voters, who would ship it
    votes: int  # that tool's voters

    @property
    def line(self) -> str:
        return f"Readers: {self.pct}% would ship {self.tool}"


def reader_results(tools: Sequence[ToolVotes]) -> list[ReaderResult]:
    """One result per comparison with a tool that MIN_VOTES readers voted on, in the order given (rank): the
    tool most readers would ship (by share; then by voters; then page order)."""
    best: dict[int, ReaderResult] = {}
    for tool in tools:
        voters = tool.ship + tool.skip
        if voters < MIN_VOTES:
            continue
        result = ReaderResult(comparison_id=tool.comparison_id, title=tool.title, url=tool.url, tool=tool.tool,
                              pct=round(100 * tool.ship / voters), votes=voters)
        current = best.get(tool.comparison_id)
        if current is None or (result.pct, result.votes) > (current.pct, current.votes):
            best[tool.comparison_id] = result
    return list(best.values())


def to_json(results: Sequence[ReaderResult]) -> str:
    return json.dumps([asdict(result) for result in results], ensure_ascii=False) if results else ""


def from_json(stored: str) -> list[ReaderResult]:
    return [ReaderResult(**item) for item in json.loads(stored)] if stored else []
