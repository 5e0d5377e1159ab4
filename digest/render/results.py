"""The readers' votes on the previous issue, as the next email shows them (issue 17, item 5): a line per
comparison, "Readers: 62% would ship Cellmind", for the readers who got that issue.

The figures were fixed when the issue opened (digest.votes.results); here they are only clipped, linked and
capped to fit the email's budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from digest.render.text import Tagged, clip
from digest.votes.results import ReaderResult

# Comparisons shown: an issue carries ten at most and readers vote on the first few; four lines is a glance,
# and at ~260 bytes of HTML each (a 60-character title, its tracked link, the line) the section stays under
# 1.3 KB beside the verdict changes (digest/render/changes.py) in the 90 KB budget.
MAX_RESULTS_SHOWN = 4
TITLE_MAX = 60
NAME_MAX = 40


@dataclass(frozen=True)
class ResultLine:
    title: str
    link: Tagged
    line: str  # "Readers: 62% would ship Cellmind"
    votes: str  # "34 votes"


def result_views(results: Sequence[ReaderResult], *, link: Callable[[str], Tagged],
                 capped: bool = True) -> tuple[ResultLine, ...]:
    """One line per result, in the previous issue's rank order; the first MAX_RESULTS_SHOWN unless ``capped``
    is False (the web version)."""
    shown = results[:MAX_RESULTS_SHOWN] if capped else results
    return tuple(ResultLine(title=clip(result.title, TITLE_MAX), link=link(result.url),
                            line=f"Readers: {result.pct}% would ship {clip(result.tool, NAME_MAX)}",
                            votes=f"{result.votes} vote" if result.votes == 1 else f"{result.votes} votes")
                 for result in shown)
