"""The open pixel answered by `digest serve`'s protocol class before it becomes an ASGI request
(digest.web.server.HttpProtocol._answer_pixel): the same bytes as the app's answer, the open recorded once,
and HTTP's rules kept — pipelined requests answered in order, HTTP/1.0 closed, a body ignored. Raw sockets
against a real uvicorn with our protocol (tests/fixtures_web.live_app, SQLite) and the real writer process.
"""

from __future__ import annotations

import logging
import socket

import pytest

from digest.track.open_writer import OpenWriter
from digest.web.factory import DigestApp
from digest.web.server import RedactTokens
from digest.web.tracking import PIXEL
from tests.factories import recipient_token
from tests.test_open_writer import opens_stored, wait_for, write_lock
from tests.test_web_tracking import HUMAN_UA, an_hour_ago, sent_delivery


def exchange(port: int, request: bytes, *, answers: int = 1) -> list[bytes]:
    """Send ``request`` (one or several requests) in one write; read ``answers`` answers, each whole."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data, got = b"", []
        while len(got) < answers:
            head_end = data.find(b"\r\n\r\n")
            if head_end >= 0:
                head = data[:head_end].decode("latin-1").lower()
                length = int(head.split("content-length: ")[1].split("\r\n")[0])
                if len(data) >= head_end + 4 + length:
                    got.append(data[:head_end + 4 + length])
                    data = data[head_end + 4 + length:]
                    continue
            chunk = sock.recv(65536)
            assert chunk, f"closed after {len(got)} answers: {data!r}"
            data += chunk
        return got


def get(path: str, *, version: str = "1.1", extra: str = "") -> bytes:
    return (f"GET {path} HTTP/{version}\r\nHost: news.example.com\r\nUser-Agent: {HUMAN_UA}\r\n{extra}\r\n").encode()


def without_date(answer: bytes) -> bytes:
    return b"\r\n".join(line for line in answer.split(b"\r\n") if not line.startswith(b"date: "))


def pixel_path(live_app) -> str:
    engine = live_app.app.state.ctx.engine
    delivery = sent_delivery(engine, sent_at=an_hour_ago())
    return f"/o/{recipient_token(engine, live_app.app.state.ctx.signer, delivery.subscriber_id, delivery.id)}.gif"


def test_the_protocols_answer_is_the_apps_answer_byte_for_byte_and_each_records_its_open(live_app, monkeypatch):
    "a pixel path the fast path leaves to the app (percent-encoded) is the same fetch: both answers are equal but "
    "for the date, each is the GIF with its security and no-cache headers, and each records its open"
    engine = live_app.app.state.ctx.engine
    fast, slow = pixel_path(live_app), pixel_path(live_app)
    encoded = slow[:3] + "%" + format(ord(slow[3]), "02X") + slow[4:]  # the app's route unquotes it
    port = live_app.port
    called, app_call = [], DigestApp.__call__

    async def counted(self, scope, receive, send):
        called.append(scope["path"])
        await app_call(self, scope, receive, send)

    monkeypatch.setattr(DigestApp, "__call__", counted)

    answered_here, = exchange(port, get(fast))
    assert called == []  # no ASGI request at all
    answered_by_app, = exchange(port, get(encoded))
    assert called == [slow]  # unquoted by uvicorn

    assert without_date(answered_here) == without_date(answered_by_app)
    assert answered_here.startswith(b"HTTP/1.1 200 OK\r\n") and answered_here.endswith(b"\r\n\r\n" + PIXEL)
    head = answered_here.split(b"\r\n\r\n")[0].decode().lower()
    for header in ("content-type: image/gif", "cache-control: no-store, max-age=0", "x-content-type-options: nosniff",
                   "date: ", "content-length: 43"):
        assert header in head, (header, head)
    assert "connection: close" not in head and "server:" not in head
    wait_for(lambda: opens_stored(engine) == 2, what="both opens stored")


def test_pipelined_requests_are_answered_in_order_on_one_connection(live_app):
    "two pixel fetches and a page in one write: three answers in that order, the connection kept open between them"
    engine = live_app.app.state.ctx.engine
    first, second = pixel_path(live_app), pixel_path(live_app)
    answers = exchange(live_app.port, get(first) + get("/archive/1999-W01") + get(second), answers=3)
    assert [answer.split(b"\r\n")[0] for answer in answers] == [
        b"HTTP/1.1 200 OK", b"HTTP/1.1 404 Not Found", b"HTTP/1.1 200 OK"]
    assert answers[0].endswith(PIXEL) and answers[2].endswith(PIXEL) and not answers[1].endswith(PIXEL)
    wait_for(lambda: opens_stored(engine) == 2, what="both opens stored")


def test_http_1_0_and_connection_close_get_the_pixel_then_the_connection_closes(live_app):
    for version, extra in (("1.0", ""), ("1.1", "Connection: close\r\n")):
        with socket.create_connection(("127.0.0.1", live_app.port), timeout=10) as sock:
            sock.sendall(get(pixel_path(live_app), version=version, extra=extra))
            data = b""
            while chunk := sock.recv(65536):  # to the end: the server closes
                data += chunk
        assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(PIXEL), (version, data)
        assert b"\r\nconnection: close\r\n" in data, (version, data)


def test_a_pixel_fetch_with_a_body_is_answered_and_the_connection_reads_on(live_app):
    "a GET that sends a body (nothing does, but HTTP allows it): the body is ignored, and the next request is answered"
    path = pixel_path(live_app)
    request = get(path, extra="Content-Length: 5\r\n") + b"hello" + get(path)
    answers = exchange(live_app.port, request, answers=2)
    assert all(answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(PIXEL) for answer in answers)


def test_a_fetch_held_back_by_the_writer_is_answered_once_its_open_is_safe_and_the_connection_goes_on(live_app):
    "the writer allows one unconfirmed open and the store is locked: the second fetch waits for its answer (and its "
    "connection reads nothing more) until the lock goes; then both opens are stored and the connection still serves"
    ctx = live_app.app.state.ctx
    ctx._open_writer = OpenWriter(database_url=str(ctx.engine.url), window_seconds=10, max_unconfirmed=1)
    first, second, third = (pixel_path(live_app) for _ in range(3))
    with socket.create_connection(("127.0.0.1", live_app.port), timeout=10) as held:
        lock = write_lock(str(ctx.engine.url))
        lock.__enter__()
        try:
            assert exchange(live_app.port, get(first))[0].endswith(PIXEL)  # one unconfirmed: answered at once
            held.sendall(get(second) + get(third))
            held.settimeout(1.5)
            with pytest.raises(socket.timeout):
                held.recv(65536)
            assert opens_stored(ctx.engine) == 0
        finally:
            lock.__exit__(None, None, None)
        held.settimeout(30)
        data = b""
        while data.count(PIXEL) < 2:
            chunk = held.recv(65536)
            assert chunk, data
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK\r\n") == 2
    wait_for(lambda: opens_stored(ctx.engine) == 3, what="the three opens stored")


def test_the_access_log_line_is_the_one_uvicorn_writes_for_the_app_with_the_client_a_proxy_forwarded(live_app):
    "behind the proxy (127.0.0.1, trusted), a pixel fetch answered here and one answered by the app log the same "
    "client, method, version and status; the token is never shown (digest.web.server.RedactTokens)"
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(handler.format(record))
    handler.addFilter(RedactTokens())
    access = logging.getLogger("uvicorn.access")
    level, access.level = access.level, logging.INFO  # the live server logs warnings only
    access.addHandler(handler)
    try:
        fast, slow = pixel_path(live_app), pixel_path(live_app)
        encoded = slow[:3] + "%" + format(ord(slow[3]), "02X") + slow[4:]
        for path in (fast, encoded):
            exchange(live_app.port, get(path, extra="X-Forwarded-For: 203.0.113.7\r\n"))
    finally:
        access.removeHandler(handler)
        access.level = level
    assert lines == ['203.0.113.7:0 - "GET /o/… HTTP/1.1" 200'] * 2, (lines, fast, encoded)
