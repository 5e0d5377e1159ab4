"""Ranking and segmenting rules the first selection tests left open (found by issue 22's mutation run): the
newest breaks a tie, a comparison without panel data ranks as a tie, a category set that sees nothing drops
only itself, and two emails that differ only in their audience line are two segments."""

from datetime import datetime, timedelta, timezone

from digest.claim.selection import ComparisonFacts, parse_categories, plan_segments, rank

T0 = datetime(2026, 11, 16, 9, tzinfo=timezone.utc)


def facts(id, category="Developer Tools", pcts=(75, 75), votes=0, hours=0):
    return ComparisonFacts(id=id, category=category, published_at=T0 + timedelta(hours=hours),
                           ship_pcts=pcts, community_votes=votes)


def test_equal_splits_and_equal_votes_put_the_newest_first():
    "the week's later verdict leads an older one with the same split and votes, whatever their ids"
    older, newer = facts(1, hours=0), facts(2, hours=30)
    assert [c.id for c in rank([older, newer])] == [2, 1]


def test_a_comparison_without_panel_data_ranks_as_a_tie_not_above_one():
    "no ship percentages read as no clear winner: the 50/50 tie with more votes goes first"
    no_data, tie = facts(1, pcts=(), votes=0), facts(2, pcts=(50, 50), votes=3)
    assert [c.id for c in rank([no_data, tie])] == [2, 1]
    assert [c.id for c in rank([no_data, facts(3, pcts=(90, 10))])] == [3, 1]


def test_a_category_set_that_sees_nothing_drops_only_itself():
    "a reader following only a category missing this week gets no email; the readers after them still do"
    ranked = rank([facts(1, "Writing")])
    segments = plan_segments(ranked, ["security", "writing", ""])
    assert sorted(s.category_sets for s in segments) == [("",), ("writing",)]


def test_the_same_comparisons_for_another_audience_are_another_segment():
    "a week of Writing only: 'all categories' and 'Writing' readers see the same verdicts but not the same footer"
    segments = plan_segments(rank([facts(1, "Writing")]), ["", "writing"])
    assert {s.audience for s in segments} == {"all categories", "Writing"}
    assert len({s.key for s in segments}) == 2  # the key is unique per issue (storage: unique (issue, key))


def test_a_users_list_of_categories_splits_on_semicolons_and_keeps_their_spelling():
    assert parse_categories(" Developer Tools;Writing ;; ") == ["Developer Tools", "Writing"]
    assert parse_categories("Data & Analytics, Writing", ",") == ["Data & Analytics", "Writing"]
