"""The access log of `digest serve` never shows a reader's token: the links in our emails carry signed tokens
that act for their reader (preferences, one-click unsubscribe, votes), and a log outlives an email."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from digest.web import create_app
from digest.web.server import TOKEN_PREFIXES, redact
from tests.fixtures_web import web_settings
from tests.test_web_serve import served  # noqa: F401 — a real `digest serve`

SECRET = "S3cretT0ken.4567.abc-DEF_xyz"


def paths(routes, prefix: str = "") -> list[str]:
    """Every route's path, through the routers FastAPI includes (kept apart since FastAPI 0.16x)."""
    found = []
    for route in routes:
        if hasattr(route, "original_router"):
            context = getattr(route, "include_context", None)
            found += paths(route.original_router.routes, prefix + (getattr(context, "prefix", "") or ""))
        elif getattr(route, "path", None):
            found.append(prefix + route.path)
    return found


def test_every_route_that_takes_a_token_is_redacted_and_no_other(sqlite_url):
    routes = paths(create_app(web_settings(sqlite_url)).routes)
    assert "/archive/{week}" in routes and "/o/{token}.gif" in routes
    redacted = set()
    for route in routes:
        names = re.findall(r"{(\w+)(?::\w+)?}", route)
        path = re.sub(r"{(\w+)(?::\w+)?}", lambda m: SECRET if "token" in m[1] else "plain-value", route)
        shown = redact(path)
        if any("token" in name for name in names):
            assert SECRET not in shown, (route, shown)
            assert shown.startswith(route.split("{")[0]), (route, shown)  # which route it was stays
            redacted.add(route.split("{")[0])
        else:
            assert shown == path, (route, shown)  # an archive week, a slug: an operator needs those
    assert redacted == set(TOKEN_PREFIXES)  # every prefix is a route's, and every token route is listed


def test_a_query_string_is_not_shown():
    assert redact(f"/c/{SECRET}?r={SECRET}") == "/c/…?…"
    assert redact("/subscribe?email=reader%40example.com") == "/subscribe?…"
    assert redact("/archive/2026-W48") == "/archive/2026-W48"


def test_digest_serve_logs_each_request_without_its_token(served):  # noqa: F811
    port, _, log = served
    paths = [f"/o/{SECRET}.gif", f"/c/{SECRET}?r={SECRET}", f"/p/{SECRET}", f"/u/{SECRET}", f"/k/{SECRET}",
             f"/confirm/{SECRET}", f"/v/{SECRET}/a-vs-b/1/ship", "/archive/2026-W48"]
    for path in paths:
        httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)
    deadline = time.monotonic() + 10
    while log.read_text().count('"GET ') < len(paths) + 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    text = log.read_text()
    lines = [line for line in text.splitlines() if '"GET ' in line and "/healthz" not in line]  # the start's probe
    assert len(lines) == len(paths), text
    assert SECRET not in text and "S3cret" not in text
    for expected in ['"GET /o/… HTTP/1.1"', '"GET /c/…?… HTTP/1.1"', '"GET /v/…/a-vs-b/1/ship HTTP/1.1"',
                     '"GET /archive/2026-W48 HTTP/1.1"']:
        assert any(expected in line for line in lines), (expected, lines)


@pytest.mark.parametrize("served", [["--no-access-log"]], indirect=True)
def test_no_access_log_when_asked(served):  # noqa: F811
    port, _, log = served
    assert httpx.get(f"http://127.0.0.1:{port}/o/{SECRET}.gif", timeout=10).status_code == 200
    assert httpx.get(f"http://127.0.0.1:{port}/archive/2026-W48", timeout=10).status_code == 404
    time.sleep(0.5)
    assert '"GET ' not in log.read_text() and "Application startup complete" in log.read_text()
