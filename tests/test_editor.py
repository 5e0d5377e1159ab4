"""The editor's live preview (`digest preview --serve`): the page, template errors, reload on change."""

from __future__ import annotations

import dataclasses

import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

from tests.factories import build_sender
from digest.config import Settings
from digest.editor.desk import EMAIL_CSP, create_editor_app
from digest.render.email import Renderer
from digest.render.environment import make_environment, templates_dir
from digest.web.security import SECURITY_HEADERS
from tests.factories import add_comparison, add_subscribers
from tests.fixtures_web import LiveServer, _free_port

NOW = datetime.now(timezone.utc)
LOCAL = "http://127.0.0.1:8001"  # what the browser on this machine sends as Host


@pytest.fixture
def sender(sqlite_url, tmp_path):
    settings = Settings(database_url=sqlite_url, secret_key="k" * 32, outbox_dir=tmp_path / "outbox")
    sender = build_sender(settings)
    add_comparison(sender.services.engine, published_at=NOW - timedelta(days=1), title="Quill vs Inkwell", category="Writing")
    add_subscribers(sender.services.engine, 2, categories=["Writing"])
    yield sender
    sender.services.engine.dispose()


def test_the_page_shows_desktop_phone_text_and_who_gets_what(sender):
    "the preview page frames the email at 640 and 375 px, shows the text part, the subject and the segments"
    client = TestClient(create_editor_app(sender.services), base_url=LOCAL)
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
    sender.services = dataclasses.replace(sender.services, renderer=Renderer(settings=sender.services.settings, links=sender.services.links, env=make_environment(copy)))
    page = TestClient(create_editor_app(sender.services, templates_root=copy), base_url=LOCAL).get("/")
    assert page.status_code == 200
    assert "Template error" in page.text and "header.mjml.j2:3: " in page.text


def test_the_page_reloads_by_itself_when_the_data_changes(sender, page):
    "an editor watches the preview; a new comparison is imported; the page shows it without a click"
    with LiveServer(create_editor_app(sender.services), _free_port()) as server:
        page.goto(server.url + "/")
        assert "Quill vs Inkwell" in page.content()
        add_comparison(sender.services.engine, published_at=NOW - timedelta(hours=1), title="Lathe vs Chisel",
                       category="Writing", pcts=(100, 0))
        page.get_by_text("Lathe vs Chisel").first.wait_for(timeout=10_000)


def test_the_preview_server_shows_the_stats_page(sender):
    "the editor's server links to /stats, which charts the rates and tabulates the figures"
    client = TestClient(create_editor_app(sender.services), base_url=LOCAL)
    assert 'href="/stats"' in client.get("/").text
    page = client.get("/stats")
    assert page.status_code == 200 and "How the issues did" in page.text


# -- for this machine only (issue 13, item 5) ----------------------------------------------------------------

PAGES = ["/", "/email.html", "/fingerprint", "/stats", "/no-such-page"]
FOREIGN = ["evil.example", "evil.example:8001", "127.0.0.1.evil.example", "localhost.evil.example:8001",
           "127.0.0.1:8001.evil.example", "evil.example#127.0.0.1", "[::1].evil.example", "localhost.",
           "127.0.0.1:8001@evil.example", "0.0.0.0:8001", "127.0.0.2", "[::ffff:127.0.0.1]", ""]


def subscriber_address(sender) -> str:
    from sqlalchemy import select

    from storage.db import session_scope
    from storage.models import Subscriber

    with session_scope(sender.services.engine) as session:
        return session.execute(select(Subscriber.email).limit(1)).scalar_one()


@pytest.mark.parametrize("host", FOREIGN)
def test_a_request_for_another_host_name_gets_421_and_nothing_else(sender, host):
    "a DNS-rebinding page asks the preview with its own Host: 421 on every page, no address, no title, no link"
    client = TestClient(create_editor_app(sender.services), base_url=LOCAL)
    address = subscriber_address(sender)
    for path in PAGES + [f"/?as={address}", f"/email.html?as={address}"]:
        answer = client.get(path, headers={"Host": host})
        assert answer.status_code == 421, (host, path, answer.status_code)
        assert address not in answer.text and "Quill" not in answer.text and "/u/" not in answer.text
        assert answer.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.1:8001", "localhost", "LocalHost:8001", "[::1]",
                                  "[::1]:8001"])
def test_the_loopback_names_are_answered(sender, host):
    "the browser on this machine, at 127.0.0.1, localhost or [::1] with or without a port, sees the preview"
    client = TestClient(create_editor_app(sender.services), base_url=LOCAL)
    page = client.get("/", headers={"Host": host})
    assert page.status_code == 200 and "Quill vs Inkwell" in page.text


def test_every_editor_answer_carries_the_security_headers(sender):
    "page, framed email, stats, fingerprint, 404: CSP, nosniff, no referrer, no-store; the email runs no script"
    client = TestClient(create_editor_app(sender.services), base_url=LOCAL)
    for path in PAGES:
        headers = client.get(path).headers
        assert headers["X-Content-Type-Options"] == "nosniff", path
        assert headers["Referrer-Policy"] == "no-referrer", path
        assert headers["Cache-Control"] == "no-store", path
        assert "frame-ancestors" in headers["Content-Security-Policy"], path
        assert "server" not in headers, path
    email = client.get("/email.html").headers["Content-Security-Policy"]
    assert email == EMAIL_CSP and "script-src" not in email and "default-src 'none'" in email
    assert "frame-ancestors 'none'" in client.get("/").headers["Content-Security-Policy"]


def test_an_unexpected_error_still_carries_the_security_headers(sender):
    "the store loses its subscriber table under the preview: a plain 500 with the headers, no traceback"
    from sqlalchemy import text

    with sender.services.engine.begin() as connection:
        connection.execute(text("DROP TABLE subscriber"))
    answer = TestClient(create_editor_app(sender.services), base_url=LOCAL, raise_server_exceptions=False).get("/")
    assert answer.status_code == 500 and "Traceback" not in answer.text and "subscriber" not in answer.text
    assert answer.headers["X-Content-Type-Options"] == "nosniff" and answer.headers["Referrer-Policy"] == "no-referrer"


def test_a_real_server_refuses_a_rebound_host_name(sender):
    "over a real socket, as a rebinding browser would send it: Host evil.example gets 421, 127.0.0.1 the page"
    with LiveServer(create_editor_app(sender.services), _free_port()) as server:
        answers = {}
        for host in ("evil.example", f"127.0.0.1:{server.port}"):
            connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            connection.putrequest("GET", "/", skip_host=True)
            connection.putheader("Host", host)
            connection.endheaders()
            response = connection.getresponse()
            answers[host] = (response.status, response.read().decode())
            connection.close()
    assert answers["evil.example"][0] == 421 and "Quill" not in answers["evil.example"][1]
    assert answers[f"127.0.0.1:{server.port}"][0] == 200


def serve_preview(tmp_path, sender, *args) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGEST_", "SENDGRID_"))}
    env.update(DIGEST_DATABASE_URL=str(sender.services.engine.url), DIGEST_SECRET_KEY="k" * 32,
               DIGEST_OUTBOX_DIR=str(tmp_path / "outbox"))
    return subprocess.Popen([sys.executable, "-m", "digest", "preview", "--serve", *args], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def listening(port: int) -> list[str]:
    """The local addresses of the listening TCP sockets on ``port`` (Linux /proc/net/tcp and tcp6, hex)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as file:
            for line in file.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                    found.append(local.rsplit(":", 1)[0])
    return found


def wait_for_listener(port: int, process: subprocess.Popen) -> list[str]:
    deadline = time.monotonic() + 60
    while not listening(port):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the preview server did not start"
        time.sleep(0.1)
    return listening(port)


def stop(process: subprocess.Popen) -> tuple[str, str]:
    process.send_signal(signal.SIGINT)
    try:
        return process.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()


def test_the_preview_command_listens_on_loopback_only(sender, tmp_path):
    "`digest preview --serve` listens on 127.0.0.1 alone, says so, and warns about nothing; uvicorn's own 400 is ours"
    port = _free_port()
    process = serve_preview(tmp_path, sender, "--port", str(port))
    try:
        assert wait_for_listener(port, process) == ["0100007F"]  # 127.0.0.1, little-endian hex
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            raw.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n")
            head = raw.recv(65536).decode("latin-1").lower()
        assert head.startswith("http/1.1 400") and "\r\nserver:" not in head
        assert all(f"\r\n{name.lower()}:" in head for name in SECURITY_HEADERS)
    finally:
        out, err = stop(process)
    assert f"preview at http://127.0.0.1:{port}/" in out and "warning" not in err


def test_listening_beyond_loopback_takes_an_option_and_warns(sender, tmp_path):
    "--host 0.0.0.0 is the operator's explicit choice: a warning names the risk, and foreign Host names still get 421"
    port = _free_port()
    process = serve_preview(tmp_path, sender, "--port", str(port), "--host", "0.0.0.0")
    try:
        assert wait_for_listener(port, process) == ["00000000"]
        foreign = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        foreign.request("GET", "/", headers={"Host": "evil.example"})
        assert foreign.getresponse().status == 421
    finally:
        out, err = stop(process)
    assert "warning: --host 0.0.0.0 listens beyond this machine" in err and "personal links" in err


def test_every_editor_page_answers_head_as_it_answers_get(sender):
    "link checkers send HEAD: each GET page of the preview server answers it with the GET's status and no body"
    client = TestClient(create_editor_app(sender.services), base_url="http://127.0.0.1:8001")
    paths = [route.path for route in client.app.routes if "GET" in (getattr(route, "methods", None) or ())]
    assert "/" in paths
    for path in paths:
        got, head = client.get(path), client.head(path)
        assert (head.status_code, head.content) == (got.status_code, b""), path
