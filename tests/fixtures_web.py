"""Fixtures for the web app: a TestClient over a migrated SQLite or PostgreSQL store, a live uvicorn server,
and a real headless Chromium driven by Playwright (Debian's /usr/bin/chromium; never a downloaded browser)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi.testclient import TestClient

from digest.config import Settings
from digest.web import create_app
from digest.web.server import uvicorn_options
from storage.db import make_engine
from tests.factories import RecordingTransport

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def web_settings(db_url: str, **overrides) -> Settings:
    values = dict(database_url=db_url, secret_key="web-test-secret-key-0123456789", base_url="http://testserver",
                  transport="outbox")
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def web_transport() -> RecordingTransport:
    return RecordingTransport()


@pytest.fixture
def web(db_url, web_transport) -> Iterator[TestClient]:
    """A TestClient on the app over a fresh migrated database (SQLite and PostgreSQL).

    `web.app.state.ctx` is the WebContext (engine, signer, links, settings); `web_transport` records emails.
    """
    engine = make_engine(db_url)
    app = create_app(web_settings(db_url), engine=engine, transport=web_transport)
    with TestClient(app, base_url="http://testserver", follow_redirects=False) as client:
        yield client
    engine.dispose()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    def __init__(self, app, port: int):
        self.app = app
        self.port = port
        self.url = f"http://127.0.0.1:{self.port}"
        # What `digest serve` runs (its protocol, no server banner), on an app built here.
        config = uvicorn.Config(app, **uvicorn_options(host="127.0.0.1", port=self.port, log_level="warning"),
                                lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def live_app(sqlite_url, web_transport):
    """The app served by a real uvicorn on 127.0.0.1 (SQLite): `live_app.url`, `live_app.app`."""
    port = _free_port()
    engine = make_engine(sqlite_url)
    app = create_app(web_settings(sqlite_url, base_url=f"http://127.0.0.1:{port}"), engine=engine,
                     transport=web_transport)
    with LiveServer(app, port) as server:
        yield server
    engine.dispose()


@pytest.fixture(scope="session")
def chromium():
    """A real headless Chromium (Debian's package). Missing → the test fails: .ci/run installs it."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        except Exception as exc:  # noqa: BLE001 — turned into a clear failure
            pytest.fail(f"headless Chromium is needed at {CHROMIUM} ({exc}); `bash .ci/run` installs it", pytrace=False)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):
    context = chromium.new_context()
    page = context.new_page()
    yield page
    context.close()
