"""The panel's decision (issue 16, item 4): tallies, means, the pick and the community line, computed from
plain records with no template and no database."""

from __future__ import annotations

from dataclasses import replace

import pytest

from digest.render.verdicts import community_line, decide, mean_score, tally, week_headline
from storage.records import ReviewRecord
from tests.email_samples import make_comparison, with_tool, with_tools


def reviews(*pairs) -> tuple[ReviewRecord, ...]:
    return tuple(ReviewRecord(persona=f"Seat {i}", score=score, verdict=verdict) for i, (score, verdict) in enumerate(pairs))


def comparison(*tools, votes=None):
    """A comparison whose tool i has the reviews ``tools[i]`` (a tuple of (score, verdict))."""
    base = replace(make_comparison(tools=len(tools)), community_votes=votes)
    for position, pairs in enumerate(tools):
        base = with_tool(base, position, reviews=reviews(*pairs))
    return base


def test_tally_counts_ship_and_skip_and_nothing_else():
    "4 ship / 0 skip; a verdict that is neither word counts for neither"
    assert tally(reviews((80, "ship"), (70, "ship"), (60, "ship"), (50, "ship"))).line == "Panel: 4 ship / 0 skip"
    assert tally(reviews((80, "ship"), (70, "skip"), (60, "maybe"))).line == "Panel: 1 ship / 1 skip"
    assert tally(()).line == "Panel: 0 ship / 0 skip"


def test_mean_score_is_none_without_reviews():
    "the mean of the seats' scores; no reviews, no mean"
    assert mean_score(reviews((80, "ship"), (71, "skip"))) == 75.5
    assert mean_score(()) is None


def test_more_ship_votes_win_even_with_a_lower_mean():
    "4 of 4 ship beats 2 of 4 ship, whatever the scores"
    decision = decide(comparison([(60, "ship")] * 4, [(95, "ship"), (95, "ship"), (95, "skip"), (95, "skip")]))
    assert decision.pick is decision.tools[0]
    assert (decision.headline, decision.detail) == ("Panel pick: Tool A0", "4 of 4 ship vs 2 of 4")


def test_equal_ship_votes_go_to_the_higher_mean():
    "3 of 4 ship each: the higher mean score picks, and the line says so"
    decision = decide(comparison([(70, "ship"), (70, "ship"), (70, "ship"), (40, "skip")],
                                 [(80, "ship"), (80, "ship"), (80, "ship"), (40, "skip")]))
    assert decision.pick is decision.tools[1]
    assert (decision.headline, decision.detail) == ("Panel pick: Tool B0", "3 of 4 ship each; mean score 70 vs 62")


def test_means_that_round_alike_show_a_decimal():
    "a pick by 70.25 over 70.0 does not read '70 vs 70'"
    decision = decide(comparison([(71, "ship"), (70, "ship"), (70, "ship"), (70, "ship")], [(70, "ship")] * 4))
    assert decision.detail == "4 of 4 ship each; mean score 70.2 vs 70.0"


def test_equal_votes_and_means_are_a_split_panel():
    "2 ship / 2 skip each with the same mean: no pick"
    split = [(80, "ship"), (40, "skip"), (70, "ship"), (50, "skip")]
    decision = decide(comparison(split, list(reversed(split))))
    assert decision.pick is None
    assert (decision.headline, decision.detail) == ("Split panel", "2 of 4 ship each, same mean score")


def test_three_tools_pick_the_best_and_split_only_on_a_tie_at_the_top():
    "with three tools the last one's score does not matter to a tie between the first two"
    top = [(80, "ship")] * 4
    assert decide(comparison(top, top, [(10, "skip")] * 4)).headline == "Split panel"
    decision = decide(comparison(top, [(80, "ship")] * 3 + [(20, "skip")], [(10, "skip")] * 4))
    assert (decision.headline, decision.detail) == ("Panel pick: Tool A0", "4 of 4 ship vs 3 of 4, 0 of 4")


def test_a_tool_without_reviews_ranks_last_and_no_reviews_at_all_is_no_verdict():
    "a reviewed tool beats one with no reviews; with no reviews anywhere there is nothing to pick"
    assert decide(comparison([(10, "skip")], [])).headline == "Panel pick: Tool A0"
    assert decide(comparison([], [])).headline == "No panel verdict yet"


def test_a_long_name_is_clipped_in_the_decision_line():
    "the pick's name is cut to 40 characters in the line (the card shows it in full)"
    decision = decide(with_tool(comparison([(90, "ship")], [(10, "skip")]), 0, name="word " * 30))
    assert len(decision.headline) <= len("Panel pick: ") + 40 and decision.headline.endswith("…")


@pytest.mark.parametrize("votes, pct, line", [
    (57, 70, "Community: 57 votes, 70% ship"),
    (1, 100, "Community: 1 vote, 100% ship"),
    (0, 70, "Community: no votes yet"),
    (None, None, "Community: no votes yet"),
    (12, None, "Community: 12 votes"),
])
def test_community_line(votes, pct, line):
    "the comparison's vote count with the tool's ship share; no votes says so"
    assert community_line(votes, pct) == line


def test_every_tool_gets_the_comparisons_vote_count_and_its_own_share():
    "votes are counted per comparison; each tool's line carries its own ship share"
    base = with_tools(comparison([(80, "ship")], [(60, "skip")], votes=57), community_ship_pct=70)
    decision = decide(with_tool(base, 1, community_ship_pct=30))
    assert [tool.community for tool in decision.tools] == ["Community: 57 votes, 70% ship",
                                                            "Community: 57 votes, 30% ship"]


def test_the_weeks_headline_counts_every_verdict_and_names_the_clearest_pick():
    "the widest lead in ship votes is the clearest pick, whatever the order; the count includes those not shown"
    narrow = decide(comparison([(70, "ship")] * 3 + [(40, "skip")], [(60, "ship")] * 2 + [(40, "skip")] * 2))
    wide = decide(replace(comparison([(20, "skip")] * 4, [(90, "ship")] * 4), title="Wide"))
    assert week_headline([narrow, wide], 5) == "5 verdicts this week — the clearest: Tool B0 over Tool A0"


def named(decision_of, first: str, second: str):
    return decide(with_tool(with_tool(decision_of, 0, name=first), 1, name=second))


def test_equal_vote_leads_go_to_the_wider_mean_then_the_first():
    "two 4-to-2 picks: the wider gap in mean score is the clearer; equal margins keep rank order"
    close = comparison([(70, "ship")] * 4, [(69, "ship")] * 2 + [(60, "skip")] * 2)
    far = comparison([(90, "ship")] * 4, [(40, "ship")] * 2 + [(30, "skip")] * 2)
    decisions = [named(close, "Close", "Closer"), named(far, "Far", "Farther")]
    assert week_headline(decisions, 2) == "2 verdicts this week — the clearest: Far over Farther"
    assert week_headline(decisions[::-1], 2) == week_headline(decisions, 2)
    twins = [named(close, "First", "Runner"), named(close, "Second", "Runner")]
    assert week_headline(twins, 2).endswith("the clearest: First over Runner")


def test_a_week_without_a_pick_only_counts():
    "one verdict, a split panel: the headline says how many and names nobody"
    split = [(80, "ship"), (40, "skip")]
    assert week_headline([decide(comparison(split, split))], 1) == "1 verdict this week"
