"""`digest demo` shows the whole product (issue 14, item 10): after it, `digest stats` has human and machine
opens, clicks and an unsubscribe to show, recorded after each send and before now; its index page is
styled like the web app's pages."""

from __future__ import annotations

import json
import os
import re
import shlex
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

REPO = Path(__file__).resolve().parents[1]


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGEST_", "SENDGRID_"))}
    env["PYTHONPATH"] = str(REPO)
    return env


class Demo:
    def __init__(self, folder: Path):
        self.folder = folder
        self.started = datetime.now(timezone.utc)
        result = subprocess.run([sys.executable, "-m", "digest.cli", "demo", "--dir", str(folder / "demo")],
                                env=clean_env(), cwd=folder, capture_output=True, text=True, timeout=120)
        self.finished = datetime.now(timezone.utc)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        self.output = result.stdout

    def printed(self, label: str) -> str:
        """What the demo printed after "LABEL: " in its "Where to look" lines."""
        match = re.search(rf"^  {re.escape(label)}: (.+)$", self.output, re.MULTILINE)
        assert match, f"the demo printed no {label!r} line:\n{self.output}"
        return match[1]

    def stats(self) -> dict[str, dict]:
        """`digest stats --json`, run as the demo says to run it."""
        command = shlex.split(self.printed("how they did").partition(" (")[0])
        assignment, program = command[0], command[1:]
        assert program == ["digest", "stats"], command
        name, _, url = assignment.partition("=")
        assert name == "DIGEST_DATABASE_URL"
        result = subprocess.run([sys.executable, "-m", "digest.cli", "stats", "--json"], env={**clean_env(), name: url},
                                cwd=self.folder, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        return {row["week"]: row for row in json.loads(result.stdout)["issues"]}

    def rows(self, sql: str) -> list[tuple]:
        with sqlite3.connect(self.folder / "demo" / "demo.db") as connection:
            return connection.execute(sql).fetchall()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Demo:
    return Demo(tmp_path_factory.mktemp("demo"))


def test_digest_stats_after_the_demo_shows_opens_clicks_and_an_unsubscribe(demo):
    """last week's issue: human and machine-only openers, clickers, one unsubscribe; this week's: the prefetch"""
    stats = demo.stats()
    assert len(stats) == 2
    this_week, last_week = sorted(stats, reverse=True)
    read = stats[last_week]
    assert read["human_openers"] > 0 and read["machine_only_openers"] > 0 and read["clickers"] > 0
    assert read["unsubscribes"] == 1
    assert read["opens"] > read["human_openers"] + read["machine_only_openers"]  # some read it twice
    fresh = stats[this_week]
    assert fresh["opens"] == fresh["machine_opens"] > 0 and fresh["human_openers"] == 0 and fresh["clickers"] == 0
    assert f"issue {last_week}: {read['human_openers']} human openers, {read['machine_only_openers']} machine-only" \
        in demo.output


def test_the_demo_records_both_kinds_of_machine_open(demo):
    """Gmail's proxy is known by its user agent, Apple's Privacy Protection by an open seconds after the send"""
    machine = demo.rows("SELECT e.detail, (julianday(e.occurred_at) - julianday(d.sent_at)) * 86400 "
                        "FROM event e JOIN delivery d ON d.id = e.delivery_id WHERE e.kind = 'open' AND e.machine")
    assert any("GoogleImageProxy" in agent for agent, _ in machine)
    prefetches = [seconds for agent, seconds in machine if "GoogleImageProxy" not in agent]
    assert prefetches and all(0 <= seconds < 10 for seconds in prefetches)
    human = demo.rows("SELECT e.detail FROM event e WHERE e.kind = 'open' AND NOT e.machine")
    assert human and not any("GoogleImageProxy" in agent for agent, in human)


def test_every_event_comes_after_its_send_and_before_the_demo_ended(demo):
    """time is passed in: no open, click or unsubscribe is stamped before its email left or after now"""
    rows = demo.rows("SELECT e.kind, e.occurred_at, d.sent_at FROM event e JOIN delivery d ON d.id = e.delivery_id "
                     "WHERE e.kind IN ('open', 'click', 'unsubscribe')")
    assert {kind for kind, _, _ in rows} == {"open", "click", "unsubscribe"}
    for kind, occurred, sent in rows:
        occurred_at, sent_at = (datetime.fromisoformat(v).replace(tzinfo=timezone.utc) for v in (occurred, sent))
        assert sent_at <= occurred_at <= demo.finished, (kind, occurred, sent)


def test_the_reader_who_unsubscribed_gets_nothing_the_week_after(demo):
    """the unsubscribe happens between the two sends, so this week's fan-out leaves that reader out"""
    (subscriber,), = demo.rows("SELECT subscriber_id FROM event WHERE kind = 'unsubscribe'")
    weeks = [week for week, in demo.rows(f"SELECT i.week FROM delivery d JOIN issue i ON i.id = d.issue_id "
                                          f"WHERE d.subscriber_id = {subscriber}")]
    assert len(weeks) == 1 and weeks[0] == min(w for w, in demo.rows("SELECT week FROM issue"))


def test_the_demo_index_is_styled_like_the_web_app_and_links_what_exists(demo, page):
    """the index loads the site's stylesheet from beside it (Chromium: the site's header rule and font), and
    every preview and the stats chart it links to is there"""
    index = Path(unquote(urlparse(demo.printed("every segment of both issues")).path))
    html = index.read_text(encoding="utf-8")
    assert '<link rel="stylesheet" href="site.css">' in html
    assert (index.parent / "site.css").read_bytes() == (REPO / "templates" / "web" / "site.css").read_bytes()
    links = re.findall(r'href="([^"]+)"', html)
    assert "stats.html" in links and len([link for link in links if link.endswith(".html")]) >= 10
    for link in links:
        assert link == "#main" or (index.parent / link).is_file(), link  # the skip link stays on the page
    assert "<svg" in (index.parent / "stats.html").read_text(encoding="utf-8")

    page.goto(index.as_uri())
    header = page.eval_on_selector("header.site", "e => getComputedStyle(e).borderTopWidth")
    body_font = page.eval_on_selector("body", "e => getComputedStyle(e).fontSize")
    width = page.eval_on_selector("main", "e => getComputedStyle(e).maxWidth")
    assert (header, body_font, width) == ("4px", "17px", "640px")  # site.css: 4px accent rule, 17px, 40rem
