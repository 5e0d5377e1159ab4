"""The web app's front door (issue 14, item 9): `/` says what this is and leads to the signup, the archive
and the site; HEAD answers like GET on every GET route, without a body and without changing anything;
the archive shows each issue's date once."""

from __future__ import annotations

import re
import socket
import time
from datetime import datetime, timezone

import pytest
from sqlalchemy import inspect, text

from digest.web.limits import OTHER
from storage.db import session_scope
from storage.models import Issue
from tests.test_security_pages import Site, all_routes
from tests.test_web_archive import publish_issue
from tests.test_web_limits import assert_secure

# Headers that may differ between two answers to the same request: the clock, and the CSRF cookie, which
# only the first request of a browser gets.
VARYING = {"date", "set-cookie"}


@pytest.fixture
def site(db_url):
    """An opened issue with sent deliveries, subscribers and a pending signup behind the app, on both stores."""
    site = Site(db_url)
    yield site
    site.close()


def every_row(engine) -> dict[str, list[tuple]]:
    """Every row of every table, sorted: two snapshots are equal only if nothing at all was written."""
    with engine.connect() as connection:
        return {table: sorted((tuple(row) for row in connection.execute(text(f'SELECT * FROM "{table}"'))), key=repr)
                for table in inspect(connection).get_table_names()}


def get_paths(site: Site) -> list[str]:
    """Each GET route filled with valid values (a link token with its reader, for the click), once each."""
    recipient = site.recipient()
    values = {"token": recipient, "link_token": site.link(), "week": site.issue.week,
              "slug": "alpha-vs-beta", "tool": "1", "choice": "ship"}  # a vote link (issue 17)
    paths = []
    for path, methods in all_routes(site.app):
        if "GET" not in methods:
            continue
        params = re.findall(r"{(\w+)}", path)
        missing = [p for p in params if p not in values]
        assert not missing, f"{path}: this test does not know how to fill {missing}: add a valid value"
        filled = path
        for param in params:
            filled = filled.replace(f"{{{param}}}", site.confirm() if path.startswith("/confirm") else values[param])
        paths.append(filled + (f"?r={recipient}" if path.startswith("/c/") else ""))
    return list(dict.fromkeys(paths))


def test_the_front_page_says_what_this_is_and_leads_to_signup_archive_and_site(web):
    """a visitor at / gets a small page: the name, one line on what it is, Subscribe, the archive, the site"""
    page = web.get("/")

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<h1>Weekly AI Tool Verdicts</h1>" in page.text
    assert "ship or skip" in page.text
    links = re.findall(r'href="([^"]+)"', page.text)
    assert {"/subscribe", "/archive", "https://verdicts.example.com/", "/static/site.css"} <= set(links)
    assert_secure(page.headers, "GET /")
    assert " style=" not in page.text and "<script" not in page.text  # the CSP allows neither
    assert "set-cookie" not in page.headers and "public" in page.headers["cache-control"]
    assert len(page.content) < 4096


def test_the_front_page_escapes_the_configured_site_url(db_url):
    """a site URL with a quote in it stays inside its href (the page is autoescaped)"""
    site = Site(db_url, site_url='https://verdicts.example.com/"><script>x</script>')
    try:
        page = site.client.get("/")
    finally:
        site.close()
    assert "<script>" not in page.text and "&#34;&gt;&lt;script&gt;" in page.text


def test_head_answers_like_get_on_every_get_route_and_changes_nothing(site):
    """a link checker HEADs every GET route with valid tokens: GET's status and headers, no body, no row written"""
    checked = []
    for path in get_paths(site):
        before = every_row(site.engine)
        head = site.client.head(path)
        assert every_row(site.engine) == before, f"HEAD {path} wrote to the store"
        assert head.status_code != 405, f"HEAD {path}: 405, but GET is a route"
        get = site.client.get(path)
        if path.startswith("/o/"):  # the pixel's open is committed by its writer just after the answer: wait for
            _wait_until(lambda: every_row(site.engine) != before, path)  # it, or the next HEAD would seem to write it
        assert head.status_code == get.status_code, path
        same = {k: v for k, v in head.headers.items() if k not in VARYING}
        assert same == {k: v for k, v in get.headers.items() if k not in VARYING}, path
        assert head.content == b"", path
        checked.append(path)
    assert {"/", "/archive", f"/archive/{site.issue.week}", "/subscribe", "/healthz"} <= set(checked)
    assert any(p.startswith("/c/") for p in checked) and any(p.startswith("/u/") for p in checked)


def _wait_until(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"GET {what}: the open was never written"
        time.sleep(0.02)


def test_a_head_of_a_click_link_records_no_click_but_a_get_does(site):
    """a mail scanner HEADs the click link: a 302 to the target and no click; the reader's GET is counted"""
    path = f"/c/{site.link()}?r={site.recipient()}"
    tracked = site.tracking_events()

    head = site.client.head(path)
    assert head.status_code == 302 and head.headers["location"] == "https://verdicts.example.com/compare/alpha-vs-beta"
    assert site.tracking_events() == tracked

    site.client.get(path)
    assert site.tracking_events() == tracked + 1


def test_head_is_refused_where_there_is_no_get(site):
    """HEAD of the webhook (POST only) is 405 naming what it allows; an unknown path is the one 404"""
    assert site.client.head("/webhooks/sendgrid").status_code == 405
    assert site.client.head("/no-such-page").status_code == 404


def test_the_front_page_and_head_keep_the_body_limit_of_every_other_route(site):
    """a 5 KB body sent to / or with a HEAD is refused (413) before anything runs: `/` is held to 4 KB"""
    body = b"x" * (OTHER.bytes + 1024)
    for method, path in (("GET", "/"), ("HEAD", "/"), ("HEAD", "/archive"), ("POST", "/")):
        response = site.client.request(method, path, content=body)
        assert response.status_code == 413, (method, path)
        assert_secure(response.headers, (method, path))


def test_uvicorn_sends_no_body_after_a_head(live_app):
    """over a real connection, HEAD / gets the GET's headers and Content-Length, then nothing more"""
    def exchange(method: str) -> bytes:
        with socket.create_connection(("127.0.0.1", live_app.port), timeout=5) as sock:
            sock.sendall(f"{method} / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        return answer

    head, get = exchange("HEAD"), exchange("GET")
    head_headers, _, head_body = head.partition(b"\r\n\r\n")
    get_headers, _, get_body = get.partition(b"\r\n\r\n")
    assert head_headers.startswith(b"HTTP/1.1 200") and head_body == b""
    length = re.search(rb"content-length: (\d+)", head_headers, re.IGNORECASE)
    assert length and int(length[1]) == len(get_body) > 0


def test_the_archive_shows_each_issue_date_once(web):
    """each past issue's entry names its week and its date once, in words (the machine-readable form in datetime)"""
    engine = web.app.state.ctx.engine
    publish_issue(engine, "2026-W10", ["Alpha vs Beta"])
    publish_issue(engine, "2026-W11", ["Gamma vs Delta"], opened=datetime(2026, 3, 12, 9, tzinfo=timezone.utc))
    with session_scope(engine) as session:
        session.add(Issue(week="2026-W12", created_at=datetime(2026, 3, 19, 9, tzinfo=timezone.utc)))

    page = web.get("/archive").text
    shown = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page[page.index("<main"):]))

    for week, long, iso in (("10", "5 March 2026", "2026-03-05"), ("11", "12 March 2026", "2026-03-12")):
        assert shown.count(long) == 1 and iso not in shown, (week, shown)
        assert f'<time datetime="{iso}">Week {week} · {long}</time>' in page
        assert f"Week {week} · " in shown
    assert "19 March 2026" not in shown  # never fanned out: not public
