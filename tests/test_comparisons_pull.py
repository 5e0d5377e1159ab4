"""The comparison feed (issue 16, item 2): pulled over real HTTP from a local server, on SQLite and PostgreSQL.

Nothing reaches the internet: every feed is served by http.server in a thread on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import ValidationError
from sqlalchemy import select
from typer.testing import CliRunner

import scheduler
from digest.cli.main import cli
from digest.config import Settings
from digest.editor.dry_run import dry_run
from digest.importing.feed import FeedError, pull
from storage.db import make_engine, session_scope
from storage.models import Comparison, FeedState
from tests.factories import RecordingTransport, add_subscribers, build_sender

UTC = timezone.utc
NOW = datetime(2026, 11, 30, 16, 50, tzinfo=UTC)
ETAG = '"v1"'
MODIFIED = "Mon, 30 Nov 2026 16:00:00 GMT"


def comparison(slug: str, score: int = 80) -> dict:
    """One comparison in the import format: two tools, four reviews each."""
    return {
        "slug": slug, "title": slug.replace("-", " ").title(), "published_at": "2026-03-02T09:00:00+00:00",
        "url": f"https://verdicts.example.com/compare/{slug}", "category": "Developer Tools", "community_votes": 57,
        "tools": [{"name": name, "tagline": f"{name} in a line", "entry_price": "$20/mo", "panel_ship_pct": pct,
                   "community_ship_pct": 70,
                   "reviews": [{"persona": persona, "score": score, "text": f"{persona} on {name}.",
                                "verdict": "ship" if seat < pct // 25 else "skip"}
                               for seat, persona in enumerate(("Builder", "Skeptic", "Futurist", "Founder"))]}
                  for name, pct in (("Alpha", 100), ("Beta", 50))],
    }


FEED = [comparison("alpha-vs-beta"), comparison("gamma-vs-delta")]


class FeedServer(ThreadingHTTPServer):
    """Serves ``body`` with ``etag`` / ``last_modified``, answers 304 to a matching conditional GET,
    ``status`` instead when set, nothing at all while ``hang``; records each request's headers."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.body, self.etag, self.last_modified = json.dumps(FEED).encode(), ETAG, None
        self.status: int | None = None
        self.redirect: str | None = None
        self.hang = False
        self.release = threading.Event()
        self.requests: list[dict[str, str]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/feed.json"


class _Handler(BaseHTTPRequestHandler):
    server: FeedServer

    def do_GET(self):
        feed = self.server
        feed.requests.append(dict(self.headers))
        if feed.hang:
            feed.release.wait(30)
            return
        if feed.redirect:
            self.send_response(302)
            self.send_header("Location", feed.redirect)
            self.end_headers()
            return
        if feed.status:
            self.send_error(feed.status)
            return
        if (feed.etag and self.headers.get("If-None-Match") == feed.etag) or (
                feed.last_modified and self.headers.get("If-Modified-Since") == feed.last_modified):
            self.send_response(304)
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(feed.body)))
        for name, value in (("ETag", feed.etag), ("Last-Modified", feed.last_modified)):
            if value:
                self.send_header(name, value)
        self.end_headers()
        self.wfile.write(feed.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def feed():
    server = FeedServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


def stored(engine) -> dict[str, datetime]:
    with session_scope(engine) as session:
        return dict(session.execute(select(Comparison.slug, Comparison.updated_at)).all())


def state(engine, url) -> FeedState:
    with session_scope(engine) as session:
        return session.execute(select(FeedState).where(FeedState.url == url)).scalar_one()


def test_a_feed_imports_and_a_second_pull_sends_its_etag_and_a_304_changes_nothing(engine, feed):
    "two comparisons arrive; the next pull sends If-None-Match, gets a 304 and writes no comparison"
    first = pull(engine=engine, url=feed.url, timeout=5, now=NOW)
    assert first.summary() == "2 new, 0 updated, 0 unchanged"
    assert "If-None-Match" not in feed.requests[0]
    before = stored(engine)
    assert set(before) == {"alpha-vs-beta", "gamma-vs-delta"}

    again = pull(engine=engine, url=feed.url, timeout=5, now=NOW + timedelta(hours=1))
    assert feed.requests[1]["If-None-Match"] == ETAG
    assert again.result is None and "not modified" in again.summary()
    assert stored(engine) == before
    after = state(engine, feed.url)
    assert after.answered_at == NOW + timedelta(hours=1) and after.not_modified and after.etag == ETAG

    feed.body, feed.etag = json.dumps([comparison("alpha-vs-beta", score=90), *FEED[1:]]).encode(), '"v2"'
    changed = pull(engine=engine, url=feed.url, timeout=5, now=NOW + timedelta(hours=2))
    assert changed.summary() == "0 new, 1 updated, 1 unchanged" and state(engine, feed.url).etag == '"v2"'


def test_last_modified_is_sent_back_as_if_modified_since_and_a_304_changes_nothing(engine, feed):
    "a feed without an ETag: its Last-Modified comes back as If-Modified-Since, and the 304 imports nothing"
    feed.etag, feed.last_modified = None, MODIFIED
    pull(engine=engine, url=feed.url, timeout=5, now=NOW)
    before = stored(engine)
    again = pull(engine=engine, url=feed.url, timeout=5, now=NOW + timedelta(hours=1))
    assert feed.requests[1]["If-Modified-Since"] == MODIFIED and "If-None-Match" not in feed.requests[1]
    assert again.result is None and stored(engine) == before
    assert state(engine, feed.url).last_modified == MODIFIED


@pytest.mark.parametrize("outage", ["down", "500"])
def test_an_outage_changes_nothing_and_the_weekly_run_still_sends(db_url, feed, tmp_path, monkeypatch, caplog,
                                                                  outage):
    "the feed answered once, then fails: the store stays, the tick logs one line and sends, the dry run says so"
    settings = Settings(database_url=db_url, secret_key="k" * 32, outbox_dir=tmp_path / "outbox",
                        transport="outbox", timezone="UTC", send_schedule="0 0 * * mon",  # due since Monday
                        comparisons_feed_url=feed.url, comparisons_feed_timeout=5)
    transport = RecordingTransport()
    sender = build_sender(settings, transport=transport, sleep=lambda s: None)
    engine = sender.services.engine
    add_subscribers(engine, 3)
    answered = datetime.now(UTC) - timedelta(hours=1)
    pull(engine=engine, url=feed.url, timeout=5, now=answered)
    before = stored(engine)
    if outage == "down":
        feed.shutdown()
        feed.server_close()
    else:
        feed.status = 500

    with caplog.at_level(logging.INFO, logger="digest.feed"):
        assert scheduler.weekly_job(sender.services, sender) is True
    feed_lines = [record for record in caplog.records if record.name == "digest.feed"]
    assert len(feed_lines) == 1 and feed_lines[0].levelno == logging.WARNING
    reason = "unreachable (connection refused)" if outage == "down" else "answered HTTP 500"
    assert reason in feed_lines[0].getMessage() and "\n" not in feed_lines[0].getMessage()
    assert stored(engine) == before
    assert len(transport.recipients) == 3  # the issue opened and went out with what the store held

    monkeypatch.chdir(tmp_path)
    assert_dry_run_shows(sender.services, db_url=db_url, url=feed.url, error=reason, answered=answered)
    engine.dispose()


def assert_dry_run_shows(services, *, db_url, url, error, answered) -> None:
    """The dry run's first line, and its JSON, name the error and the last good answer."""
    line = dry_run(services=services, week=None, now=datetime.now(UTC)).feed.sentence(tz=UTC)
    assert line.startswith(f"feed: {error}") and ", since " in line
    assert line.endswith(f"; last answered {answered:%Y-%m-%d %H:%M} UTC, 2 new, 0 updated, 0 unchanged")
    env = {"DIGEST_DATABASE_URL": db_url, "DIGEST_TIMEZONE": "UTC", "DIGEST_COMPARISONS_FEED_URL": url}
    shown = CliRunner().invoke(cli, ["send", "--dry-run"], env=env)
    assert shown.exit_code == 0 and shown.stdout.splitlines()[0] == line
    as_json = json.loads(CliRunner().invoke(cli, ["send", "--dry-run", "--json"], env=env).stdout)["feed"]
    assert as_json["error"].startswith(error) and as_json["answered_at"] == answered.isoformat()
    assert as_json["created"] == 2


def test_a_bad_item_imports_nothing_and_the_error_names_the_item_and_field(engine, feed, tmp_path, monkeypatch,
                                                                          db_url):
    "item 2's score is 130: item 1 is not imported either, and the error says item, slug and field"
    feed.body = json.dumps([comparison("alpha-vs-beta"), comparison("gamma-vs-delta", score=130)]).encode()
    with pytest.raises(FeedError) as refused:
        pull(engine=engine, url=feed.url, timeout=5, now=NOW)
    where = 'item 2 (slug "gamma-vs-delta"): tools[0].reviews[0].score: 130 is greater than the maximum of 100'
    assert str(refused.value).startswith(f"invalid: {where}")
    assert f"{feed.url}: {where}" in refused.value.details
    assert stored(engine) == {}
    failed = state(engine, feed.url)
    assert failed.error.startswith("invalid: item 2") and failed.answered_at is None and failed.etag is None

    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(cli, ["comparisons", "pull", feed.url], env={"DIGEST_DATABASE_URL": db_url})
    assert done.exit_code == 1
    assert f"{feed.url}: {where}" in done.stderr and "nothing was imported" in done.stderr
    assert stored(engine) == {}


def test_the_command_imports_and_says_what_it_brought(engine, feed, tmp_path, monkeypatch, db_url):
    "digest comparisons pull URL: the counts, then a 304 the second time"
    monkeypatch.chdir(tmp_path)
    env = {"DIGEST_DATABASE_URL": db_url}
    done = CliRunner().invoke(cli, ["comparisons", "pull", feed.url], env=env)
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == f"{feed.url}: 2 new, 0 updated, 0 unchanged"
    again = CliRunner().invoke(cli, ["comparisons", "pull", feed.url], env=env)
    assert again.stdout.strip() == f"{feed.url}: not modified since the last pull: nothing imported"


def test_digest_send_pulls_the_configured_feed_first(db_url, feed, tmp_path, monkeypatch):
    "DIGEST_COMPARISONS_FEED_URL set: `digest send` imports the feed, then opens the issue with it"
    engine = make_engine(db_url)
    add_subscribers(engine, 2)
    monkeypatch.chdir(tmp_path)
    env = {"DIGEST_DATABASE_URL": db_url, "DIGEST_SECRET_KEY": "k" * 32, "DIGEST_TRANSPORT": "outbox",
           "DIGEST_OUTBOX_DIR": str(tmp_path / "outbox"), "DIGEST_TIMEZONE": "UTC",
           "DIGEST_COMPARISONS_FEED_URL": feed.url}
    done = CliRunner().invoke(cli, ["send"], env=env)
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines()[0] == f"feed {feed.url}: 2 new, 0 updated, 0 unchanged"
    assert "2 comparisons claimed, 2 recipients" in done.stdout
    engine.dispose()


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/feed.json", "feed.json", "http:///x"])
def test_a_url_that_is_not_http_is_refused_with_a_clear_message(sqlite_url, tmp_path, monkeypatch, url):
    "only http(s) with a host: the command exits 2, the setting is refused, pull() reads nothing"
    monkeypatch.chdir(tmp_path)
    done = CliRunner().invoke(cli, ["comparisons", "pull", url], env={"DIGEST_DATABASE_URL": sqlite_url})
    assert done.exit_code == 2
    assert "only http:// and https:// feeds can be pulled" in done.stderr or "has no host name" in done.stderr
    with pytest.raises(ValidationError, match="DIGEST_COMPARISONS_FEED_URL"):
        Settings(comparisons_feed_url=url)
    with pytest.raises(FeedError):
        pull(engine=None, url=url, timeout=5, now=NOW)


def test_a_feed_that_never_answers_is_given_up_within_the_timeout(engine, feed):
    "the server accepts and says nothing: the pull stops after its timeout and records why"
    feed.hang = True
    started = time.monotonic()
    with pytest.raises(FeedError, match=r"no answer within 0\.5 s"):
        pull(engine=engine, url=feed.url, timeout=0.5, now=NOW)
    assert time.monotonic() - started < 3
    assert state(engine, feed.url).error == "no answer within 0.5 s" and stored(engine) == {}


def test_a_refused_connection_is_unreachable(engine):
    "nothing listens on the port: one line, connection refused"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(FeedError, match=r"^unreachable \(connection refused\)$"):
        pull(engine=engine, url=f"http://127.0.0.1:{port}/feed.json", timeout=5, now=NOW)


@pytest.mark.parametrize(("target", "said"), [
    ("ftp://example.com/feed.json", r"redirected \(302\) to a URL that cannot be pulled: only http"),
    ("file:///etc/passwd", r"Redirection to url 'file:///etc/passwd' is not allowed"),  # urllib's own check
])
def test_a_redirect_away_from_http_is_refused(engine, feed, target, said):
    "the feed redirects to ftp:// or file://: nothing is read, and the error says why"
    feed.redirect = target
    with pytest.raises(FeedError, match=said):
        pull(engine=engine, url=feed.url, timeout=5, now=NOW)
    assert stored(engine) == {}


def test_a_feed_past_the_size_cap_is_refused_as_it_arrives(engine, feed, monkeypatch):
    "a cap of 100 bytes (the file import's 50 MB, lowered): the body is refused and nothing imported"
    monkeypatch.setattr("digest.importing.feed.MAX_FILE_BYTES", 100)
    with pytest.raises(FeedError, match="more than the .* an import may be"):
        pull(engine=engine, url=feed.url, timeout=5, now=NOW)
    assert stored(engine) == {}
