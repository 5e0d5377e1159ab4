"""The editor's live preview (`digest preview --serve`): the page, template errors, reload on change."""

from __future__ import annotations

import shutil
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from digest.app import build_sender
from digest.config import Settings
from digest.editor import create_editor_app
from digest.render import Renderer, make_environment, templates_dir
from tests.factories import add_comparison, add_subscribers
from tests.fixtures_web import LiveServer, _free_port

NOW = datetime.now(timezone.utc)


@pytest.fixture
def sender(sqlite_url, tmp_path):
    settings = Settings(database_url=sqlite_url, secret_key="k" * 32, outbox_dir=tmp_path / "outbox")
    sender = build_sender(settings)
    add_comparison(sender.engine, published_at=NOW - timedelta(days=1), title="Quill vs Inkwell", category="Writing")
    add_subscribers(sender.engine, 2, categories=["Writing"])
    yield sender
    sender.engine.dispose()


def test_the_page_shows_desktop_phone_text_and_who_gets_what(sender):
    "the preview page frames the email at 640 and 375 px, shows the text part, the subject and the segments"
    client = TestClient(create_editor_app(sender))
    page = client.get("/")
    assert page.status_code == 200
    assert 'width="640"' in page.text and 'width="375"' in page.text
    assert "Quill vs Inkwell" in page.text and "Who gets what" in page.text
    email = client.get("/email.html")
    assert email.status_code == 200 and "<html" in email.text and "[%" not in email.text


def test_a_broken_template_shows_its_file_and_line_on_the_page(sender, tmp_path):
    "a typo in a partial: the page names the file and line instead of crashing"
    copy = tmp_path / "templates"
    shutil.copytree(templates_dir(), copy)
    partial = copy / "email" / "partials" / "header.mjml.j2"
    lines = partial.read_text().splitlines()
    lines.insert(2, "{{ no_such_value.attribute }}")
    partial.write_text("\n".join(lines) + "\n")
    sender.renderer = Renderer(settings=sender.settings, links=sender.links, env=make_environment(copy))
    page = TestClient(create_editor_app(sender, templates_root=copy)).get("/")
    assert page.status_code == 200
    assert "Template error" in page.text and "header.mjml.j2, line 3" in page.text


def test_the_page_reloads_by_itself_when_the_data_changes(sender, page):
    "an editor watches the preview; a new comparison is imported; the page shows it without a click"
    with LiveServer(create_editor_app(sender), _free_port()) as server:
        page.goto(server.url + "/")
        assert "Quill vs Inkwell" in page.content()
        add_comparison(sender.engine, published_at=NOW - timedelta(hours=1), title="Lathe vs Chisel",
                       category="Writing", pcts=(100, 0))
        page.get_by_text("Lathe vs Chisel").first.wait_for(timeout=10_000)


def test_the_preview_server_shows_the_stats_page(sender):
    "the editor's server links to /stats, which charts the rates and tabulates the figures"
    client = TestClient(create_editor_app(sender))
    assert 'href="/stats"' in client.get("/").text
    page = client.get("/stats")
    assert page.status_code == 200 and "How the issues did" in page.text
