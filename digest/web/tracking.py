"""Open pixel and click redirects: what mail clients and image proxies fetch.

Never fail loudly to a mail client: the pixel is always the pixel, whatever went wrong (logged here).
A click goes only to the URL signed into its token, so nobody can use us as an open redirect.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from functools import partial

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from digest.links import BadToken
from digest.tracking import OpenRecorder, record_click, record_open
from digest.web.context import WebContext, get_context
from digest.web.security import SECURITY_HEADERS

router = APIRouter()
log = logging.getLogger("digest.web")

# 1×1 transparent GIF, 43 bytes.
PIXEL = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00"
         b",\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
# Every fetch must reach us to count: no cache in the client, a proxy or a CDN may keep it.
PIXEL_HEADERS = {"Cache-Control": "no-store, max-age=0", "Pragma": "no-cache", "Expires": "0"}
_RAW_PIXEL_HEADERS = [(name.lower().encode(), value.encode()) for name, value in {
    "Content-Type": "image/gif", "Content-Length": str(len(PIXEL)), **PIXEL_HEADERS, **SECURITY_HEADERS}.items()]
REDIRECT_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


class OpenPixelFastPath:
    """ASGI middleware: GET /o/{token}.gif answered before routing, dependencies and the other middleware.

    The pixel is the one URL fetched once per opened email; through the full FastAPI stack (a threadpool
    hop, BaseHTTPMiddleware, a transaction per fetch) it managed ~550 requests/s under 32 connections.
    Here the open goes to the process's `OpenRecorder` (group commit) and the response waits for its
    commit, so an answered fetch is always stored. HEAD and anything else fall through to the router.
    """

    def __init__(self, app):
        self.app = app
        self._recorder: OpenRecorder | None = None
        self._wake: _Wake | None = None

    async def __call__(self, scope, receive, send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" and scope["method"] == "GET" else ""
        token = path[3:-4] if path.startswith("/o/") and path.endswith(".gif") else ""
        if not token or "/" in token:
            await self.app(scope, receive, send)
            return
        try:
            await self._record(scope, token)
        except Exception:  # noqa: BLE001 — the reader's mail client must get its image regardless
            log.exception("open pixel: could not record an open")
        await send({"type": "http.response.start", "status": 200, "headers": _RAW_PIXEL_HEADERS})
        await send({"type": "http.response.body", "body": PIXEL})

    async def _record(self, scope, token: str) -> None:
        ctx: WebContext = scope["app"].state.ctx
        recipient = ctx.recipient(token)
        if recipient is None or recipient.delivery_id is None:
            return
        if self._recorder is None:
            self._recorder = OpenRecorder(engine=ctx.engine, window_seconds=ctx.settings.machine_open_seconds)
        loop = asyncio.get_running_loop()
        if self._wake is None or self._wake.loop is not loop:  # one loop per server; tests start several
            self._wake = _Wake(loop)
        user_agent = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"user-agent"), None)
        answer = loop.create_future()
        self._recorder.submit(recipient=recipient, user_agent=user_agent, now=ctx.clock(),
                              done=partial(self._wake.settle, answer))
        result = await answer
        if isinstance(result, BaseException):
            log.error("open pixel: could not record an open", exc_info=result)


class _Wake:
    """Answers from the writer thread, handed to the event loop with one wake-up per group, not per fetch.

    ``call_soon_threadsafe`` writes to the loop's self-pipe each time; a group commit of 32 opens made
    32 writes and 32 wake-ups where one does.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._ready: list[tuple[asyncio.Future, object]] = []
        self._lock = threading.Lock()
        self._scheduled = False

    def settle(self, future: asyncio.Future, result) -> None:
        """From the writer thread: ``future`` gets ``result`` on the loop, soon."""
        with self._lock:
            self._ready.append((future, result))
            if self._scheduled:
                return
            self._scheduled = True
        self.loop.call_soon_threadsafe(self._run)

    def _run(self) -> None:
        with self._lock:
            ready, self._ready, self._scheduled = self._ready, [], False
        for future, result in ready:
            if not future.done():
                future.set_result(result)


@router.api_route("/o/{token}.gif", methods=["GET", "HEAD"], include_in_schema=False)
def open_pixel(token: str, request: Request, ctx: WebContext = Depends(get_context)) -> Response:
    """Record an open (GET only: a HEAD is a prefetcher checking the URL) and answer the pixel.

    A GET normally never gets here: `OpenPixelFastPath` answers it first. This stays the route of record.
    """
    if request.method == "GET":
        try:
            recipient = ctx.recipient(token)
            if recipient is not None:
                record_open(engine=ctx.engine, recipient=recipient, user_agent=request.headers.get("user-agent"),
                            now=ctx.clock(), window_seconds=ctx.settings.machine_open_seconds)
        except Exception:  # noqa: BLE001 — the reader's mail client must get its image regardless
            log.exception("open pixel: could not record an open")
    return Response(PIXEL, media_type="image/gif", headers=PIXEL_HEADERS)


@router.get("/c/{link_token}", include_in_schema=False)
def click(link_token: str, request: Request, r: str | None = None,
          ctx: WebContext = Depends(get_context)) -> Response:
    """302 to the signed target; record the click when ``r`` names a recipient. An altered token is a 404."""
    try:
        url = ctx.signer.read_link_token(link_token)
    except BadToken:
        return ctx.not_found()
    recipient = ctx.recipient(r) if r else None
    if recipient is not None:
        try:
            record_click(engine=ctx.engine, recipient=recipient, url=url,
                         user_agent=request.headers.get("user-agent"), now=ctx.clock())
        except Exception:  # noqa: BLE001 — the reader still gets where they were going
            log.exception("click: could not record a click on %s", url)
    return RedirectResponse(url, status_code=302, headers=REDIRECT_HEADERS)
