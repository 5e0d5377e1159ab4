"""A port another server holds (issue 14, item 10): `digest serve` and `digest preview --serve` say so in one
line and exit 2, before printing any URL; no traceback, no uvicorn log. A free port still serves."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from digest.ports import listen_problem

REPO = Path(__file__).resolve().parents[1]


def cli_env(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGEST_", "SENDGRID_"))}
    env.update(DIGEST_DATABASE_URL=database_url, DIGEST_SECRET_KEY="busy-port-test-secret-key-0123456789",
               DIGEST_TRANSPORT="outbox", PYTHONPATH=str(REPO))
    return env


@pytest.fixture
def taken_port():
    """A port on 127.0.0.1 that another server is listening on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


@pytest.mark.parametrize("command", [["serve"], ["preview", "--serve"]])
def test_a_busy_port_is_one_line_and_exit_2_before_any_url(command, taken_port, sqlite_url, tmp_path):
    """another server holds the port: one line naming port and address, exit 2, no URL, no traceback"""
    result = subprocess.run([sys.executable, "-m", "digest.cli", *command, "--port", str(taken_port)],
                            env=cli_env(sqlite_url), cwd=tmp_path, capture_output=True, text=True, timeout=60)

    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"error: port {taken_port} is already in use on 127.0.0.1: stop the other server or pass --port N"]
    assert result.stdout == ""  # the preview's "preview at http://…" never came
    assert "Traceback" not in result.stderr and "http://" not in result.stderr


def test_a_free_port_is_served_and_its_url_printed(sqlite_url, tmp_path):
    """the check refuses nothing that works: on a free port the preview prints its URL and answers there"""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "digest.cli", "preview", "--serve", "--port", str(port)],
                               env=cli_env(sqlite_url), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout.readline() == f"preview at http://127.0.0.1:{port}/ (Ctrl-C to stop)\n"
        deadline = time.monotonic() + 20
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/fingerprint", timeout=2).status_code == 200
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None, process.stderr.read()
                time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_an_address_or_port_that_cannot_be_listened_on_gets_one_line():
    """an address of another machine, a port past 65535: what is wrong and what to pass (no DNS is asked)"""
    assert listen_problem("192.0.2.1", 8000) == (  # TEST-NET-1 (RFC 5737): never this machine's
        "cannot listen on 192.0.2.1: it is not an address of this machine; "
        "pass --host 127.0.0.1 or one of its addresses")
    assert listen_problem("127.0.0.1", 70000) == "port 70000 is not a port number: pass --port with a number from 1 to 65535"
    assert listen_problem("127.0.0.1", 0) is None
