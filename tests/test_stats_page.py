"""The stats page: a chart of the rates over the issues, human and machine opens apart, and the table with
the readers' votes (the preview server's /stats on SQLite and PostgreSQL)."""

import re
from datetime import timedelta

from fastapi.testclient import TestClient

from digest.claim.opening import open_issue
from digest.config import Settings
from digest.editor.desk import create_editor_app
from digest.track.stats import IssueStats
from digest.track.stats_page import SERIES, stats_page
from tests.factories import add_comparison, add_subscribers, build_sender
from tests.test_stats import SENT_AT, SLUG, cast, deliveries_of


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


def test_votes_and_voters_are_rows_of_the_table():
    "an issue with 12 votes by 9 voters of 200: two rows, voters with their rate, and the page says a vote is a click"
    row = issue("2026-W48", 200, 80, 30, 20, 3)
    row.votes, row.voters = 12, 9
    page = stats_page([row])
    assert '<th scope="row">Votes</th><td>12</td>' in page
    assert '<th scope="row">Voters</th><td>9 <span class=muted>(4.5%)</span></td>' in page
    assert '<th scope="row">Clickers (incl. voters)</th><td>20' in page
    assert "a voter counts as a clicker, once" in page


def test_the_preview_servers_stats_page_counts_the_readers_votes(engine, tmp_path):
    "votes cast from week 48's email show on /stats of `digest preview --serve`, the voter among the clickers"
    settings = Settings(database_url=engine.url.render_as_string(hide_password=False), secret_key="k" * 32,
                        outbox_dir=tmp_path / "outbox")
    add_comparison(engine, slug=SLUG, published_at=SENT_AT - timedelta(days=1))
    ada, bo = add_subscribers(engine, 2)
    open_issue(engine=engine, week="2026-W48", now=SENT_AT)
    deliveries_of(engine, "2026-W48")
    cast(engine, ada, "1", "ship", week="2026-W48")
    cast(engine, ada, "2", "skip", week="2026-W48")
    sender = build_sender(settings)
    try:
        page = TestClient(create_editor_app(sender.services), base_url="http://127.0.0.1:8001").get("/stats")
    finally:
        sender.services.engine.dispose()
    assert page.status_code == 200
    assert '<th scope="row">Votes</th><td>2</td>' in page.text
    assert '<th scope="row">Voters</th><td>1 <span class=muted>(50.0%)</span></td>' in page.text
    assert '<th scope="row">Clickers (incl. voters)</th><td>1 <span class=muted>(50.0%)</span></td>' in page.text


def test_the_table_says_each_issues_state_and_why_it_is_halted():
    """issue 18: a paused issue's column says paused and the guardrail's reason; a finished one says done"""
    from digest.track.stats import IssueState

    paused, done = issue("2026-W48", 200, 80, 30, 20, 3), issue("2026-W47", 180, 70, 20, 15, 1)
    paused.state = IssueState("paused", "guardrail: bounce rate 7.2% (36 of 500) > 5.0%")
    done.state = IssueState("done", None)
    page = stats_page([paused, done])
    assert ('<th scope="row">State</th><td>paused <span class=muted>(guardrail: bounce rate 7.2% (36 of 500) &gt; '
            '5.0%)</span></td><td>done</td></tr>') in page
