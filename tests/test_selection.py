from datetime import datetime, timedelta, timezone

from digest.claim.selection import (
    ComparisonFacts,
    audience_label,
    canonical_categories,
    cap,
    plan_segments,
    rank,
    visible_to,
)

T0 = datetime(2026, 11, 16, 9, tzinfo=timezone.utc)


def facts(id, category="Developer Tools", pcts=(75, 75), votes=0, hours=0):
    return ComparisonFacts(id=id, category=category, published_at=T0 + timedelta(hours=hours),
                           ship_pcts=pcts, community_votes=votes)


def test_a_clear_winner_ranks_above_a_tie():
    "a 100% vs 25% verdict leads a 75% vs 75% one, whatever their age"
    tie, clear = facts(1, pcts=(75, 75), hours=10), facts(2, pcts=(100, 25), hours=0)
    assert [c.id for c in rank([tie, clear])] == [2, 1]


def test_ties_go_to_community_votes_then_the_newest():
    "equal splits: more community votes first, then the newest, then the id"
    a, b, c, d = facts(1, votes=5), facts(2, votes=9), facts(3, hours=5), facts(4, hours=5)
    assert [x.id for x in rank([a, b, c, d])] == [2, 1, 3, 4]


def test_categories_are_canonical_whatever_the_spelling():
    "case, spacing and repeats do not change what a subscriber follows"
    assert canonical_categories(["Writing", " developer  tools", "WRITING", ""]) == "developer tools;writing"
    assert canonical_categories([]) == ""


def test_a_subscriber_sees_only_followed_categories_and_all_when_none():
    "following Writing shows Writing comparisons; following nothing shows everything"
    ranked = rank([facts(1, "Writing"), facts(2, "Developer Tools")])
    assert [c.id for c in visible_to(ranked, "writing")] == [1]
    assert {c.id for c in visible_to(ranked, "")} == {1, 2}
    assert visible_to(ranked, "security") == []


def test_segments_group_category_sets_that_see_the_same_email():
    "'writing' and 'security;writing' see the same comparisons in a week with no security verdict: one segment"
    ranked = rank([facts(1, "Writing", pcts=(100, 0)), facts(2, "Developer Tools")])
    segments = plan_segments(ranked, ["writing", "security;writing", "", "security"])
    by_sets = {s.category_sets: s for s in segments}
    assert set(by_sets) == {("security;writing", "writing"), ("",)}
    assert by_sets[("security;writing", "writing")].comparison_ids == (1,)
    assert by_sets[("",)].comparison_ids == (1, 2)
    assert by_sets[("",)].audience == "all categories"
    assert by_sets[("security;writing", "writing")].audience == "Writing"
    assert len({s.key for s in segments}) == 2


def test_audience_names_the_followed_categories_in_the_issue():
    "the footer says which followed categories the issue covers, in the site's spelling"
    ranked = rank([facts(1, "Writing", pcts=(100, 0)), facts(2, "Developer Tools"), facts(3, "Data & Analytics")])
    assert audience_label(ranked, "data & analytics;developer tools;writing") == \
        "Writing, Developer Tools and Data & Analytics"


def test_cap_shows_eight_and_counts_the_rest():
    "ten comparisons: eight shown in full, 'and 2 more'"
    shown, more = cap(list(range(10)), 8)
    assert shown == tuple(range(8)) and more == 2
    assert cap([1, 2], 8) == ((1, 2), 0)
