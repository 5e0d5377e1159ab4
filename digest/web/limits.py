"""Request bodies capped while they stream: a limit per route, 413 past it, 408 for a body that drips.

Pure ASGI, outside FastAPI's stack, so that nothing behind it (form parsing, CSRF, the webhook's signature
check) ever holds more than its route's limit: a Content-Length above the limit is refused before the app
runs, and a chunked or lying body is counted as it arrives and cut off the moment it passes the limit.
The app is then told that the client left (`http.disconnect`), and whatever it answers after that is
dropped: the client already has its 413 or 408, with `Connection: close` so uvicorn reads no more of it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import anyio

KB = 1024
MB = 1024 * KB


@dataclass(frozen=True)
class Limit:
    bytes: int
    seconds: float  # the whole body must have arrived this long after the app first asked for it


# SendGrid posts events in batches of at most 768 KB (or every 30 s, whichever comes first): 5 MB is room
# to spare, and four posts at once hold 20 MB. 30 s is 170 KB/s for a full 5 MB.
WEBHOOK = Limit(5 * MB, seconds=30)
# A signup (an address, a name, up to 100 categories) or a preference form: never more than a few KB.
FORM = Limit(16 * KB, seconds=10)
# One comparison pushed by the site (digest.web.api): the demo's are about 3 KB, and even four tools with
# four 10,000-character reviews each stay under 200 KB; 1 MB is room to spare. 20 s is 50 KB/s for all of it.
API = Limit(1 * MB, seconds=20)
# Every other route reads no body at all.
OTHER = Limit(4 * KB, seconds=10)
# A path is matched exactly, or by its prefix when the entry ends in "/".
ROUTES: tuple[tuple[str, Limit], ...] = (
    ("/webhooks/sendgrid", WEBHOOK), ("/subscribe", FORM), ("/u/", FORM), ("/p/", FORM), ("/confirm/", FORM),
    ("/api/comparisons/", API),
)


def limit_for(path: str, routes: tuple[tuple[str, Limit], ...] = ROUTES) -> Limit:
    for prefix, limit in routes:
        if path == prefix or (prefix.endswith("/") and path.startswith(prefix)):
            return limit
    return OTHER


class BodyLimits:
    """ASGI middleware: `BodyLimits(app)`; the limits are `ROUTES` (else `OTHER`)."""

    def __init__(self, app, *, routes: tuple[tuple[str, Limit], ...] = ROUTES):
        self.app = app
        self.routes = routes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = limit_for(scope["path"], self.routes)
        declared = _content_length(scope["headers"])
        if declared is not None and declared > limit.bytes:
            await _refuse(send, 413, _too_large(scope["path"], limit))
            return
        body = _CappedBody(scope["path"], limit, receive, send)
        try:
            await self.app(scope, body.receive, body.send)
        except Exception:
            if body.refused is None and not body.gone:
                raise
            # The app was told the client left (Starlette's ClientDisconnect): after our 413 or 408, or
            # because it did leave mid-body. Expected, and nobody to answer: no traceback in the log.


class _CappedBody:
    """The `receive` and `send` the app gets: bytes counted, a deadline, our answer once the cap is hit."""

    def __init__(self, path: str, limit: Limit, receive, send):
        self.path, self.limit, self._receive, self._send = path, limit, receive, send
        self.received = 0
        self.deadline: float | None = None
        self.complete = False
        self.started = False
        self.refused: int | None = None  # the status we answered with
        self.gone = False  # the client left before its body was complete

    async def receive(self) -> dict:
        if self.refused is not None:
            return {"type": "http.disconnect"}
        if self.complete:  # only a disconnect can come now, whenever it comes: no deadline
            return await self._receive()
        if self.deadline is None:
            self.deadline = time.monotonic() + self.limit.seconds
        try:
            with anyio.fail_after(max(self.deadline - time.monotonic(), 0)):
                message = await self._receive()
        except TimeoutError:
            return await self._stop(408, f"The request body did not arrive within {self.limit.seconds:g} s. "
                                         "Send it again in one go.")
        if message["type"] == "http.disconnect":
            self.gone = True
        elif message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit.bytes:
                return await self._stop(413, _too_large(self.path, self.limit))
            self.complete = not message.get("more_body", False)
        return message

    async def send(self, message: dict) -> None:
        if self.refused is not None:
            return  # the client has our answer; the app's own comes too late
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)

    async def _stop(self, status: int, text: str) -> dict:
        self.refused = status
        if not self.started:
            await _refuse(self._send, status, text)
        return {"type": "http.disconnect"}


def _too_large(path: str, limit: Limit) -> str:
    return f"The request body is larger than {path[:100]} accepts ({_size(limit.bytes)}). Send less."


def _size(count: int) -> str:
    return f"{count // MB} MB" if count >= MB else f"{count // KB} KB"


def _content_length(headers) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server has already refused a malformed one
    return None


async def _refuse(send, status: int, text: str) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"), (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})
