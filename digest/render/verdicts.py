"""What the panel decided, computed once per comparison for the templates (issue 16, item 4): each tool's
tally of ship and skip votes, its mean score, its community line, and the panel's pick.

Pure functions over records: the templates only show what is computed here, and the exact wording of the
text part's lines (``Panel: 4 ship / 0 skip``, ``Community: 57 votes, 70% ship``) lives here, once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from digest.render.text import clip
from storage.records import ComparisonRecord, ReviewRecord, ToolRecord

# A tool name in the decision line, the headline and the lede: the line stays one line of a phone screen; the
# card's h3 clips at the same length (tools.mjml.j2).
PICK_NAME_MAX = 40

# A seat's name in the opinion's lede ("the Skeptic"), as the seat table shows it (tools.mjml.j2): the site's
# four are 7 or 8 characters.
LEDE_SEAT_MAX = 12


@dataclass(frozen=True)
class Tally:
    """A tool's panel votes. A verdict that is neither "ship" nor "skip" counts for neither."""

    ship: int
    skip: int

    @property
    def seats(self) -> int:
        return self.ship + self.skip

    @property
    def line(self) -> str:
        return f"Panel: {self.ship} ship / {self.skip} skip"


@dataclass(frozen=True)
class ToolVerdict:
    """One tool as the email shows it: the record and what the panel and the community said of it."""

    tool: ToolRecord
    tally: Tally
    mean: float | None  # None without reviews
    community: str


@dataclass(frozen=True)
class Decision:
    """A comparison's verdict: ``headline`` ("Panel pick: Cellmind", "Split panel") and why (``detail``)."""

    tools: tuple[ToolVerdict, ...]
    pick: ToolVerdict | None
    headline: str
    detail: str
    runner_up: ToolVerdict | None = None  # the second-ranked tool, when there is a pick

    @property
    def margin(self) -> tuple[int, float]:
        """How clearly the pick won: its lead in ship votes, then in mean score (0, 0 without a pick)."""
        if self.pick is None or self.runner_up is None:
            return (0, 0.0)
        return (self.pick.tally.ship - self.runner_up.tally.ship, _rank(self.pick)[1] - _rank(self.runner_up)[1])


def tally(reviews: Sequence[ReviewRecord]) -> Tally:
    verdicts = [review.verdict for review in reviews]
    return Tally(ship=verdicts.count("ship"), skip=verdicts.count("skip"))


def mean_score(reviews: Sequence[ReviewRecord]) -> float | None:
    return sum(review.score for review in reviews) / len(reviews) if reviews else None


def community_line(votes: int | None, ship_pct: int | None) -> str:
    """ "Community: 57 votes, 70% ship"; "Community: no votes yet" while the comparison has none.

    ``votes`` is the comparison's (the site counts votes per comparison), ``ship_pct`` the tool's share.
    """
    if not votes:
        return "Community: no votes yet"
    count = f"{votes} vote" if votes == 1 else f"{votes} votes"
    return f"Community: {count}" if ship_pct is None else f"Community: {count}, {ship_pct}% ship"


def tool_verdict(tool: ToolRecord, community_votes: int | None) -> ToolVerdict:
    return ToolVerdict(tool=tool, tally=tally(tool.reviews), mean=mean_score(tool.reviews),
                       community=community_line(community_votes, tool.community_ship_pct))


def decide(comparison: ComparisonRecord) -> Decision:
    """The panel's pick: the tool with the most ship votes, then the higher mean score; "Split panel" when
    the two best are equal on both. A tool without reviews ranks below every reviewed one."""
    tools = tuple(tool_verdict(tool, comparison.community_votes) for tool in comparison.tools)
    if not any(tool.tally.seats for tool in tools):
        return Decision(tools=tools, pick=None, headline="No panel verdict yet", detail="")
    ranked = sorted(tools, key=_rank, reverse=True)
    best, second = ranked[0], ranked[1] if len(ranked) > 1 else None
    if second is not None and _rank(best) == _rank(second):
        return Decision(tools=tools, pick=None, headline="Split panel",
                        detail=f"{_votes(best)} ship each, same mean score")
    return Decision(tools=tools, pick=best, headline=f"Panel pick: {clip(best.tool.name, PICK_NAME_MAX)}",
                    detail=_why(best, list(ranked[1:])), runner_up=second)


def week_headline(decisions: Sequence[Decision], total: int) -> str:
    """The issue's one line (issue 16, item 5): "3 verdicts this week — the clearest: Cellmind over Gridwise".

    ``total`` counts every comparison of the issue for these readers, shown or not; the clearest pick is
    the shown decision with the widest margin (`Decision.margin`), the first of equals (they come ranked).
    """
    count = "1 verdict" if total == 1 else f"{total} verdicts"
    picked = [decision for decision in decisions if decision.pick is not None]
    if not picked:
        return f"{count} this week"
    clearest = max(picked, key=lambda decision: decision.margin)  # max keeps the first of equals
    winner = clip(clearest.pick.tool.name, PICK_NAME_MAX)
    if clearest.runner_up is None:
        return f"{count} this week — the clearest: {winner}"
    return f"{count} this week — the clearest: {winner} over {clip(clearest.runner_up.tool.name, PICK_NAME_MAX)}"


def opinion_lede(review: ReviewRecord, tool: ToolRecord) -> str:
    """Why the quoted opinion matters, as an editor writes it (issue 16, item 8), from where ``review`` stands
    in its tool's panel (``tool.reviews``, itself included):

    - in the minority: "The lone dissent: the Skeptic would skip Cellmind (40/100) while the rest of the
      panel ships it." ("A dissent: … while most of the panel ships it." when it is not alone);
    - in the majority, or alone: "The strongest case for Cellmind: the Builder, 92/100." / "The strongest
      case against Cellmind: the Skeptic would skip it, 30/100.";
    - the panel evenly split: "The panel splits on Cellmind: the Skeptic would skip it (40/100).".

    A verdict that is neither ship nor skip takes no side: "The strongest opinion on Cellmind: the Builder,
    60/100.". Names are clipped (a lede is a line or two); the templates escape it.
    """
    seat, name = clip(review.persona, LEDE_SEAT_MAX), clip(tool.name, PICK_NAME_MAX)
    score, verdict = review.score, review.verdict
    if verdict not in ("ship", "skip"):
        return f"The strongest opinion on {name}: the {seat}, {score}/100."
    votes = tally(tool.reviews)
    same, other = (votes.ship, votes.skip) if verdict == "ship" else (votes.skip, votes.ship)
    if other > same:
        alone = same == 1 and other == len(tool.reviews) - 1
        lead, rest = ("The lone dissent", "the rest of the panel") if alone else ("A dissent", "most of the panel")
        majority = "skips" if verdict == "ship" else "ships"
        return f"{lead}: the {seat} would {verdict} {name} ({score}/100) while {rest} {majority} it."
    if other == same:
        return f"The panel splits on {name}: the {seat} would {verdict} it ({score}/100)."
    if verdict == "ship":
        return f"The strongest case for {name}: the {seat}, {score}/100."
    return f"The strongest case against {name}: the {seat} would skip it, {score}/100."


def _rank(tool: ToolVerdict) -> tuple[int, float]:
    return (tool.tally.ship, -1.0 if tool.mean is None else tool.mean)


def _votes(tool: ToolVerdict) -> str:
    return f"{tool.tally.ship} of {tool.tally.seats}"


def _why(best: ToolVerdict, others: list[ToolVerdict]) -> str:
    """ "4 of 4 ship vs 2 of 4"; on equal votes, the means: "3 of 4 ship each; mean score 80 vs 72"."""
    if not others:
        return f"{_votes(best)} ship"
    if all(other.tally.ship < best.tally.ship for other in others):
        return f"{_votes(best)} ship vs " + ", ".join(_votes(other) for other in others)
    tied = [other for other in others if other.tally.ship == best.tally.ship]
    means = _means([best.mean, *(other.mean for other in tied)])
    return f"{_votes(best)} ship each; mean score {means[0]} vs " + ", ".join(means[1:])


def _means(values: list[float | None]) -> list[str]:
    """Means as whole numbers, or with as many decimals as it takes for the first to differ from the rest."""
    for digits in (0, 1, 2):
        shown = ["–" if value is None else f"{value:.{digits}f}" for value in values]
        if shown[0] not in shown[1:]:
            return shown
    return shown
