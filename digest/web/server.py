"""How uvicorn serves the public app: `uvicorn_options()` is what `digest serve` runs, and what tests run.

The open pixel is answered by `HttpProtocol` itself, as soon as its request's head is read: the open handed to
the writer as the app would, then the GIF in one write (`_answer_pixel`; every other request, and a pixel fetch
that path leaves, is the app's).

uvicorn answers some requests itself, before the app sees them (a malformed request line or header): its
protocol class writes that 400. `HttpProtocol` makes those answers carry the same security headers as the
app's, caps the request line and headers together (httptools, unlike h11, has no cap of its own), and
gives them a deadline: uvicorn waits forever for a connection's first request, and for headers sent a byte
at a time, so a few hundred such connections would hold the process (slowloris). The body has its own
limits (`digest.web.limits`). No `server:` banner: it tells a scanner which server and version to try; the
`date:` header stays, since RFC 9110 §6.6.1 asks an origin server with a clock to send it.

The access log names no token (`RedactTokens`): the links in our emails carry signed tokens that act for
their reader (the preference centre, one-click unsubscribe, votes), and a log is read and kept by more people
and for longer than an email.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import re

import httptools
from uvicorn.config import LOGGING_CONFIG
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from digest.web.security import SECURITY_HEADERS
from digest.web.tracking import PIXEL_ANSWER, await_hand_over, pixel_path_token

# The request line and headers together. A link's token is ~200 bytes and our cookie ~100; 32 KB leaves
# room for cookies other sites on the domain set, and is what nginx accepts (4 buffers of 8 KB).
MAX_HEAD_BYTES = 32 * 1024
# From the connection (or the previous answer) to the end of the headers: a client on a slow mobile link
# sends 32 KB of headers in well under a second. uvicorn's own keep-alive timeout (5 s) closes a connection
# that stays silent after an answer; this one also covers a connection that never spoke, or drips.
HEAD_SECONDS = 10.0

_RAW_SECURITY_HEADERS = b"".join(f"{name.lower()}: {value}\r\n".encode() for name, value in SECURITY_HEADERS.items())


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the security headers on its own answers, and a cap and a deadline
    on the request line and headers."""

    # One timer per connection, not one per request (arming and cancelling one costs 3-7 µs, of the ~90 µs an
    # open pixel fetch takes): it fires HEAD_SECONDS after the wait for a request's head began and, when that
    # head has come since, is armed again for whatever the next wait has left.
    head_timer = None
    head_since: float | None = None  # when the wait for a request's head began; None while one is answered

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.head_since = self.loop.time()
        self.head_timer = self.loop.call_later(HEAD_SECONDS, self._check_head)

    def connection_lost(self, exc) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self.head_since = None
        if not self._answer_pixel():
            super().on_headers_complete()

    # -- the open pixel, answered before it becomes an ASGI request ---------------------------------------------

    def _answer_pixel(self) -> bool:
        """A plain GET of the open pixel, answered here: its open handed to the writer as the app would
        (`DigestApp.hand_over_open`), then the GIF in one write, with the headers the app's answer has. No task,
        no ASGI messages, one write instead of two: the pixel is the one URL fetched once per opened email
        (benchmarks/tracking.py). Anything else, or a pixel fetch this path does not take (a pipelined one
        while another is answered, a percent-encoded path, a root path, a concurrency limit), goes the usual
        way, where the app answers it (digest.web.tracking.answer_pixel)."""
        if not (self.url.startswith(b"/o/") and self.parser.get_method() == b"GET"):  # most requests leave here
            return False
        app = _pixel_app(self.app)
        if app is None or self.root_path or self.limit_concurrency is not None or self.expect_100_continue:
            return False
        if self.cycle is not None and not self.cycle.response_complete:
            return False  # pipelined behind an answer still being written: uvicorn queues it
        path = httptools.parse_url(self.url).path
        if b"%" in path or self.parser.should_upgrade():  # percent-encoded: uvicorn unquotes it for the app
            return False
        token = pixel_path_token(path.decode("ascii"))
        if not token:
            return False
        http_version = self.parser.get_http_version()
        user_agent = next((value for name, value in self.headers if name == b"user-agent"), None)
        keep_alive = http_version != "1.0" and self.parser.should_keep_alive()
        self.cycle = answering = _Answered(self.url.decode("latin-1"), http_version, keep_alive=keep_alive)
        waiting = app.hand_over_open(token, user_agent)
        if waiting is None:
            self._write_pixel(answering)
        else:  # the pipe is full or the writer far behind: nothing more is read until this answer is written
            self.flow.pause_reading()
            task = self.loop.create_task(await_hand_over(waiting))
            task.add_done_callback(lambda _: self._write_pixel(answering))
            task.add_done_callback(self.tasks.discard)
            self.tasks.add(task)
        return True

    def _write_pixel(self, answering: _Answered) -> None:
        answering.response_complete = True
        if self.transport.is_closing():
            return
        if self.access_log:
            client = self._forwarded_client()
            self.access_logger.info('%s - "%s %s HTTP/%s" %d', "%s:%d" % client if client else "", "GET",
                                    answering.url, answering.http_version, 200)
        defaults = self.server_state.default_headers  # the date (no server banner: uvicorn_options)
        head = [STATUS_LINE[200]] + [name + b": " + value + b"\r\n" for name, value in defaults]
        if not answering.keep_alive:  # HTTP/1.0, the client's "connection: close", or the server shutting down
            head.append(b"connection: close\r\n")
        self.transport.write(b"".join(head) + PIXEL_ANSWER)
        if not answering.keep_alive:
            self.transport.close()
        self.on_response_complete()

    def _forwarded_client(self) -> tuple[str, int] | None:
        """The client as uvicorn's ProxyHeadersMiddleware makes it out for the app and the access log: the
        address a trusted proxy forwarded, else the peer. Its own code decides, run on a scope of this request."""
        scope = {"type": "http", "client": self.client, "headers": self.headers}
        if isinstance(self.app, ProxyHeadersMiddleware):
            reader = ProxyHeadersMiddleware(_nothing, trusted_hosts=[])
            reader.trusted_hosts = self.app.trusted_hosts
            with contextlib.suppress(StopIteration):
                reader(scope, None, None).send(None)  # runs to its end at once: _nothing never waits
        return scope["client"]

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.cycle.response_complete:  # else a pipelined request came meanwhile, and is now answered
            self.head_since = self.loop.time()  # the wait for the next request's head begins

    def _check_head(self) -> None:
        self.head_timer = None
        if self.transport.is_closing():
            return
        answering = self.cycle is not None and not self.cycle.response_complete  # a pipelined one included
        left = HEAD_SECONDS if self.head_since is None or answering else self.head_since + HEAD_SECONDS - self.loop.time()
        if left > 0.01:
            self.head_timer = self.loop.call_later(left, self._check_head)
            return
        self._answer(b"408 Request Timeout",
                     f"The request line and headers did not arrive within {HEAD_SECONDS:g} s. Send them in one go.")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_bytes = 0
        self.head_too_large = False

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > MAX_HEAD_BYTES:
            self.head_too_large = True
            raise ValueError("request head too large")  # the parser turns it into the 431 below

    def send_400_response(self, msg: str) -> None:
        """Called by uvicorn for whatever httptools could not parse; the connection is then closed."""
        if getattr(self, "head_too_large", False):
            self._answer(b"431 Request Header Fields Too Large", f"The request line and headers are larger than "
                                                                 f"{MAX_HEAD_BYTES // 1024} KB together. Send less.")
        else:
            self._answer(b"400 Bad Request", f"{msg} Check the request line and the headers.")

    def _answer(self, status: bytes, text: str) -> None:
        """Write STATUS with the security headers, then close the connection."""
        body = text.encode("ascii")
        default = b"".join(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers)
        self.transport.write(b"HTTP/1.1 " + status + b"\r\n" + default + _RAW_SECURITY_HEADERS
                             + b"content-type: text/plain; charset=utf-8\r\n"
                             + b"content-length: " + str(len(body)).encode() + b"\r\n"
                             + b"connection: close\r\n\r\n" + body)
        self.transport.close()


class _Answered:
    """The cycle of a pixel fetch answered by `HttpProtocol._answer_pixel`, as far as uvicorn's protocol reads
    one: whether its answer is written; a body the request may still send is ignored."""

    def __init__(self, url: str, http_version: str, *, keep_alive: bool) -> None:
        self.url, self.http_version = url, http_version
        self.keep_alive = keep_alive  # uvicorn's shutdown clears it
        self.response_complete = self.disconnected = False
        self.body, self.more_body = bytearray(), True
        self.message_event = asyncio.Event()


async def _nothing(scope, receive, send) -> None:
    """The app behind the ProxyHeadersMiddleware that `HttpProtocol._forwarded_client` runs."""


def _pixel_app(app):
    """The DigestApp inside uvicorn's wrappers (ProxyHeadersMiddleware), or None for another app."""
    while app is not None and not hasattr(app, "hand_over_open"):
        app = getattr(app, "app", None)
    return app


# The routes whose next path segment is a token acting for a reader: the open pixel, a click's link, a
# confirmation, the "keep me" link, the preference centre, unsubscribe, a vote (digest.links writes them).
# tests/test_access_log.py holds this list to the app's routes.
TOKEN_PREFIXES = ("/o/", "/c/", "/confirm/", "/k/", "/p/", "/u/", "/v/")
# ("-" is no token: /p/-/deleted, the page after an erasure.)
_TOKEN_SEGMENT = re.compile(r"^(/(?:" + "|".join(re.escape(p.strip("/")) for p in TOKEN_PREFIXES) + r")/)(?!-(?:/|$))[^/?]+")


def redact(path: str) -> str:
    """``path`` as the access log shows it: a token segment as "…", a query string (a click's recipient
    token, anything a form sent by GET) as "?…"."""
    path, query, _ = path.partition("?")
    return _TOKEN_SEGMENT.sub(r"\1…", path) + ("?…" if query else "")


class RedactTokens(logging.Filter):
    """On uvicorn's access log: the request's path through `redact` (its record's args are
    (client, method, path with query, HTTP version, status))."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], redact(args[2]), args[3], args[4])
        return True


def _log_config() -> dict:
    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_tokens"] = {"()": RedactTokens}
    config["loggers"]["uvicorn.access"]["filters"] = ["redact_tokens"]
    return config


def uvicorn_options(*, host: str, port: int, workers: int = 1, log_level: str = "info",
                    access_log: bool = True) -> dict:
    """Keyword arguments for `uvicorn.run(app, **…)` or `uvicorn.Config(app, **…)`.

    proxy_headers: the app runs behind a TLS-terminating proxy (README), which says who the client is.
    access_log: a line per request on stdout, tokens redacted (`RedactTokens`).
    """
    return dict(host=host, port=port, workers=workers, proxy_headers=True, log_level=log_level,
                http=HttpProtocol, server_header=False, date_header=True, access_log=access_log,
                log_config=_log_config())
