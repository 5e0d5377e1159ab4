"""A real `digest serve` under attack (issue 13, items 3 and 4): four concurrent 250 MB posts to the webhook
(chunked, declared, lying), large posts to /subscribe and a slow drip leave its memory flat; the answers
uvicorn writes itself (malformed requests, oversized or dripping headers, a silent connection) carry the
security headers; no `server:` banner.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from digest.web.limits import FORM
from digest.web.server import HEAD_SECONDS
from tests.test_reliability_crash import record
from tests.test_web_limits import assert_secure
from tests.test_webhook import PUBLIC_KEY

REPO = Path(__file__).resolve().parents[1]
MB = 1024 * 1024
PIECE = 64 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def served(request, sqlite_url, tmp_path):
    """`digest serve` (one worker: the process we measure is the one that answers): its port, pid and log.
    Parametrised indirectly, further options of `digest serve`."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGEST_", "SENDGRID_"))}
    env.update(DIGEST_DATABASE_URL=sqlite_url, DIGEST_SECRET_KEY="limits-test-secret-key-0123456789",
               DIGEST_BASE_URL=f"http://127.0.0.1:{port}", DIGEST_TRANSPORT="outbox",
               DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY=PUBLIC_KEY, PYTHONPATH=str(REPO))
    log = tmp_path / "serve.log"
    process = subprocess.Popen([sys.executable, "-m", "digest.cli", "serve", "--port", str(port),
                                *getattr(request, "param", [])], env=env,
                               cwd=tmp_path, stdout=log.open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"digest serve did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.1)
        yield port, process.pid, log
    finally:
        process.terminate()
        process.wait(timeout=10)


def answer(sock: socket.socket) -> tuple[int | None, dict[str, str]]:
    """The status and headers of the server's answer, or (None, {}) if it closed without one."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
    except (ConnectionResetError, socket.timeout):
        pass
    if not data.startswith(b"HTTP/1.1 "):
        return None, {}
    head = data.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
    return int(head[0].split()[1]), {k.lower(): v for k, v in headers.items()}


def send_until_answered(port: int, head: bytes, pieces, *, pause: float = 0.0) -> tuple[int | None, int]:
    """Send HEAD, then body PIECES until the server answers (or stops reading); (status, body bytes sent)."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        try:
            for piece in pieces:
                if select.select([sock], [], [], pause)[0]:
                    break  # the answer is here: a client that listens stops sending
                sock.settimeout(5)
                sock.sendall(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass
        sock.settimeout(30)
        return answer(sock)[0], sent


def chunked(total: int):
    for _ in range(total // PIECE):
        yield b"%x\r\n" % PIECE + b"[" * PIECE + b"\r\n"


def raw(total: int):
    for _ in range(total // PIECE):
        yield b"[" * PIECE


def post_head(path: str, *headers: str) -> bytes:
    return "\r\n".join([f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *headers, "", ""]).encode()


def memory(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (the peak since the process started), in KB, from /proc."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {line.split(":")[0]: int(line.split()[1]) for line in lines if line.startswith(("VmRSS", "VmHWM"))}


def test_concurrent_oversized_posts_and_a_slow_drip_leave_memory_flat(served):
    "4 × 250 MB to the webhook (chunked, declared, lying), 2 × 250 MB to /subscribe, a drip: 413/408, RSS +<50 MB"
    port, pid, log = served
    for _ in range(3):  # warm up every code path the attack touches, so its first use is not counted
        httpx.post(f"http://127.0.0.1:{port}/webhooks/sendgrid", content=b"[]")
        httpx.post(f"http://127.0.0.1:{port}/subscribe", json={"email": "warm@example.com"})
        send_until_answered(port, post_head("/webhooks/sendgrid", "Transfer-Encoding: chunked"), chunked(6 * MB))
    before = memory(pid)
    big = 250 * MB
    attacks = {
        "webhook chunked 1": (post_head("/webhooks/sendgrid", "Transfer-Encoding: chunked"), chunked(big), {413}),
        "webhook chunked 2": (post_head("/webhooks/sendgrid", "Transfer-Encoding: chunked"), chunked(big), {413}),
        "webhook declared": (post_head("/webhooks/sendgrid", f"Content-Length: {big}"), raw(big), {413}),
        # Content-Length says 100: the rest is read as a next request, which is no request (403, then 400).
        "webhook lying": (post_head("/webhooks/sendgrid", "Content-Length: 100"), raw(big), {403, 400}),
        "subscribe chunked": (post_head("/subscribe", "Transfer-Encoding: chunked",
                                        "Content-Type: application/x-www-form-urlencoded"), chunked(big), {413}),
        "subscribe declared": (post_head("/subscribe", f"Content-Length: {big}", "Content-Type: application/json"),
                               raw(big), {413}),
        "subscribe drip": (post_head("/subscribe", "Content-Length: 1000", "Content-Type: application/json"),
                           (b"[" for _ in range(1000)), {408}),
    }
    results: dict[str, tuple] = {}
    peak = [before["VmRSS"]]

    def attack(name, head, pieces):
        results[name] = send_until_answered(port, head, pieces, pause=0.5 if name.endswith("drip") else 0.0)

    threads = [threading.Thread(target=attack, args=(name, head, pieces))
               for name, (head, pieces, _) in attacks.items()]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        peak.append(memory(pid)["VmRSS"])
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    after = memory(pid)
    for name, (_, _, expected) in attacks.items():
        assert results[name][0] in expected, (name, results[name])
    growth_mb = (max(peak) - before["VmRSS"]) / 1024
    assert growth_mb < 50, f"RSS grew by {growth_mb:.0f} MB"
    assert results["subscribe drip"][1] < 1000 and FORM.seconds - 0.5 <= elapsed < FORM.seconds + 15
    assert "Traceback" not in log.read_text(), "a client cut off, or gone mid-body, is not an error to log"
    record("body limits under attack", rss_before_mb=round(before["VmRSS"] / 1024, 1),
           rss_peak_mb=round(max(peak) / 1024, 1), rss_after_mb=round(after["VmRSS"] / 1024, 1),
           growth_mb=round(growth_mb, 1), seconds=round(elapsed, 1),
           answers={name: status for name, (status, _) in results.items()},
           body_mb_sent_before_answer={name: round(sent / MB, 2) for name, (_, sent) in results.items()})


MALFORMED = {
    "not HTTP": b"GARBAGE\r\n\r\n",
    "header without a colon": b"GET /healthz HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
    "control byte in the path": b"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
    "non-ASCII byte in the path": b"GET /\xff HTTP/1.1\r\nHost: x\r\n\r\n",
    "Content-Length not a number": b"POST /subscribe HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    "Content-Length and chunked": (b"POST /subscribe HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
                                   b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    "bad chunk size": b"POST /subscribe HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "100 KB header": b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n",
    "100 KB path": b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
}


def slow_head(port: int, pieces: list[bytes], results: dict, name: str) -> None:
    """Open a connection and send PIECES a second apart (none: stay silent); the answer and when it came."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=HEAD_SECONDS + 10) as sock:
        try:
            for piece in pieces:
                if select.select([sock], [], [], 1.0)[0]:
                    break
                sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        results[name] = (*answer(sock), time.monotonic() - started)


def test_uvicorns_own_answers_carry_the_security_headers_and_no_server_banner(served):
    "malformed request lines and headers, a silent connection, headers a byte a second: 4xx with every header"
    port, _, _ = served
    slow: dict[str, tuple] = {}
    drips = {"a connection that says nothing": [],
             "headers a byte a second": [bytes([c]) for c in b"GET /healthz HTTP/1.1\r\nX-A: b\r\n" * 2]}
    threads = [threading.Thread(target=slow_head, args=(port, pieces, slow, name))
               for name, pieces in drips.items()]
    for thread in threads:
        thread.start()
    statuses = {}
    for name, request in {"a good request": b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", **MALFORMED}.items():
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request)
            status, headers = answer(sock)
        statuses[name] = status
        assert status is not None and status < 500, (name, status)
        assert_secure(headers, name)
        assert "server" not in headers and "date" in headers, (name, headers)
    assert statuses["a good request"] == 200 and statuses["not HTTP"] == 400
    assert statuses["100 KB header"] == statuses["100 KB path"] == 431
    for thread in threads:
        thread.join()
    for name, (status, headers, seconds) in slow.items():
        assert status == 408 and HEAD_SECONDS - 0.5 <= seconds < HEAD_SECONDS + 5, (name, status, seconds)
        assert_secure(headers, name)
        statuses[name] = status
    record("uvicorn's own answers", statuses=statuses, missing_headers=0, server_banner=0,
           slow_head_answered_after_s={name: round(seconds, 1) for name, (_, _, seconds) in slow.items()})


def whole_answer(sock: socket.socket) -> int | None:
    """Read one answer, head and body (by its Content-Length), off a kept-alive connection: its status."""
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            piece = sock.recv(65536)
            if not piece:
                return None
            data += piece
        head, body = data.split(b"\r\n\r\n", 1)
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                       if line.lower().startswith(b"content-length:")), 0)
        while len(body) < length:
            body += sock.recv(65536)
    except (ConnectionResetError, socket.timeout):
        return None
    return int(head.split()[1]) if head.startswith(b"HTTP/1.1 ") else None


def kept_alive(port: int, script: list[tuple[float, bytes]], results: dict, name: str) -> None:
    """One connection: for each (pause, request) wait PAUSE seconds, send REQUEST a byte a second if it is
    not a whole request (else at once), and read its answer whole; the statuses and when each came."""
    started = time.monotonic()
    got = []
    with socket.create_connection(("127.0.0.1", port), timeout=HEAD_SECONDS + 10) as sock:
        for pause, request in script:
            time.sleep(pause)
            try:
                for piece in [request] if request.endswith(b"\r\n\r\n") else [bytes([c]) for c in request]:
                    if select.select([sock], [], [], 0)[0]:
                        break  # answered before the request was whole
                    sock.sendall(piece)
                    if len(piece) == 1:
                        time.sleep(1.0)
            except (BrokenPipeError, ConnectionResetError):
                pass
            status = whole_answer(sock)
            got.append((status, round(time.monotonic() - started, 1)))
            if status is None or status >= 400:
                break
    results[name] = got


def test_a_kept_alive_connection_has_the_head_deadline_for_each_request_not_for_the_connection(served):
    "requests every 2 s on one connection past HEAD_SECONDS: all answered; a drip after an answer: 408 in time"
    port, _, _ = served
    good = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    scripts = {"a request every 2 s": [(0, good)] + [(2, good)] * int(HEAD_SECONDS / 2 + 2),
               "a drip after an answer": [(0, good), (0.5, b"GET /healthz HTTP/1.1\r\nX-A: b\r\n" * 2)]}
    results: dict[str, list] = {}
    threads = [threading.Thread(target=kept_alive, args=(port, script, results, name)) for name, script in scripts.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = results["a request every 2 s"]
    assert [status for status, _ in every] == [200] * len(scripts["a request every 2 s"]), every
    assert every[-1][1] > HEAD_SECONDS + 2  # the connection outlived one deadline: it was not the connection's
    (first, _), (status, seconds) = results["a drip after an answer"]
    assert first == 200 and status == 408 and HEAD_SECONDS <= seconds < HEAD_SECONDS + 5, results
