"""The stats page: a chart of the rates over the issues, human and machine opens apart, and the table."""

import re

from digest.track.stats import IssueStats
from digest.track.stats_page import SERIES, stats_page


def issue(week, sent, human, machine, clickers, unsubscribes):
    return IssueStats(week=week, recipients=sent, sent=sent, delivered=sent, human_openers=human,
                      machine_only_openers=machine, clickers=clickers, unsubscribes=unsubscribes)


def test_each_rate_is_a_line_over_the_issues_oldest_first():
    "three issues: four series of three points each, weeks on the x axis from oldest to newest"
    rows = [issue("2026-W48", 100, 40, 20, 10, 1), issue("2026-W47", 100, 50, 10, 12, 2),
            issue("2026-W46", 100, 45, 15, 8, 0)]
    page = stats_page(rows)
    assert page.count("<polyline") == len(SERIES) == 4
    assert page.index(">2026-W46<") < page.index(">2026-W47<") < page.index(">2026-W48<")
    assert "2026-W48: Human opens 40.0%" in page and "2026-W48: Machine-only opens 20.0%" in page
    assert "2026-W47: Unsubscribes 2.0%" in page


def test_the_points_sit_at_their_rates_on_the_axis():
    "a 50% human open rate is drawn at the 50% grid line of a 0–50% axis"
    page = stats_page([issue("2026-W48", 10, 5, 0, 1, 0), issue("2026-W47", 10, 2, 1, 1, 0)])
    grid = dict((label, float(y)) for y, label in re.findall(r'y="([\d.]+)" text-anchor="end" class="axis">([\d.]+%)', page))
    human = re.search(r'<circle cx="[\d.]+" cy="([\d.]+)" r="4" fill="#1d4ed8"><title>2026-W48', page)
    assert abs(float(human.group(1)) + 4 - grid["50%"]) < 0.5


def test_the_table_carries_every_figure_for_screen_readers():
    "the chart has a title, and the figures are a table with row and column headers"
    page = stats_page([issue("2026-W48", 200, 80, 30, 20, 3)])
    assert 'role="img"' in page and "<title id=\"chart-title\">" in page
    assert '<th scope="row">Human openers</th><td>80 <span class=muted>(40.0%)</span></td>' in page
    assert '<th scope="row">Machine-only openers</th><td>30' in page


def test_no_issue_yet_says_so():
    "an empty store: a sentence, not an empty chart"
    assert "No issue has been sent yet" in stats_page([])
