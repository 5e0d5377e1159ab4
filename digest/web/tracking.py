"""Open pixel and click redirects: what mail clients and image proxies fetch.

Never fail loudly to a mail client: the pixel is always the pixel, whatever went wrong (logged here).
A click goes only to the URL signed into its token, so nobody can use us as an open redirect.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from digest.links import BadToken
from digest.track.opens import record_click, record_open
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
# The whole answer after the status line and the server's own headers (date), for the protocol's fast path.
PIXEL_ANSWER = b"".join(name + b": " + value + b"\r\n" for name, value in _RAW_PIXEL_HEADERS) + b"\r\n" + PIXEL
REDIRECT_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


def pixel_token(scope) -> str:
    """The token of a GET /o/{token}.gif, or "" for any other request (HEAD included: it records nothing)."""
    if scope["type"] != "http" or scope["method"] != "GET":
        return ""
    return pixel_path_token(scope["path"])


def pixel_path_token(path: str) -> str:
    """The token of the path /o/{token}.gif, or "" for any other path (also digest.web.server's fast path)."""
    token = path[3:-4] if path.startswith("/o/") and path.endswith(".gif") else ""
    return "" if "/" in token else token


async def answer_pixel(ctx: WebContext, scope, token: str, send) -> None:
    """Answer a GET of the open pixel as raw ASGI, ahead of routing, dependencies and every middleware.

    The pixel is the one URL fetched once per opened email; through the full FastAPI stack (a threadpool
    hop, a transaction per fetch) it managed ~550 requests/s under 32 connections. Here the open is handed
    to the process's writer (`digest.track.open_writer`: a child process, group commits), and the GIF goes out
    once the open is in the pipe to it, where a `kill -9` of this process cannot lose it. Security headers
    are in `_RAW_PIXEL_HEADERS`, as the middleware would have added them. (`digest serve`'s protocol class
    answers most pixel fetches before they become ASGI requests at all, with `hand_over_open` and
    `PIXEL_ANSWER`: digest.web.server.)
    """
    user_agent = next((v for k, v in scope["headers"] if k == b"user-agent"), None)
    waiting = hand_over_open(ctx, token, user_agent)
    if waiting is not None:
        await await_hand_over(waiting)
    await send({"type": "http.response.start", "status": 200, "headers": _RAW_PIXEL_HEADERS})
    await send({"type": "http.response.body", "body": PIXEL})


def hand_over_open(ctx: WebContext, token: str, user_agent: bytes | None) -> Awaitable[None] | None:
    """The open a pixel fetch of ``token`` records, handed to the writer: None once it is in the pipe, else what
    to await (`await_hand_over`) before answering. A bad token records nothing; no error reaches the mail client."""
    try:
        recipient = ctx.recipient(token)
        if recipient is not None and recipient.delivery_id is not None:
            agent = user_agent.decode("latin-1") if user_agent is not None else None
            return ctx.open_writer().hand_over(recipient, agent, ctx.clock())
    except Exception:  # noqa: BLE001 — the reader's mail client must get its image regardless
        log.exception("open pixel: could not record an open")
    return None


async def await_hand_over(waiting: Awaitable[None]) -> None:
    """Await what `hand_over_open` returned, logging instead of raising."""
    try:
        await waiting
    except Exception:  # noqa: BLE001
        log.exception("open pixel: could not record an open")


@router.api_route("/o/{token}.gif", methods=["GET", "HEAD"], include_in_schema=False)
def open_pixel(token: str, request: Request, ctx: WebContext = Depends(get_context)) -> Response:
    """Record an open (GET only: a HEAD is a prefetcher checking the URL) and answer the pixel.

    A GET normally never gets here: the app answers it first (`answer_pixel`). This stays the route of record.
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
    """302 to the signed target; record the click when ``r`` names a recipient (GET only). An altered token is a 404."""
    try:
        url = ctx.signer.read_link_token(link_token)
    except BadToken:
        return ctx.not_found()
    # A HEAD is a scanner checking the link (digest.web.factory.answer_head_like_get): it is not a click.
    recipient = ctx.recipient(r) if r and request.method == "GET" else None
    if recipient is not None:
        try:
            record_click(engine=ctx.engine, recipient=recipient, url=url,
                         user_agent=request.headers.get("user-agent"), now=ctx.clock())
        except Exception:  # noqa: BLE001 — the reader still gets where they were going
            log.exception("click: could not record a click on %s", url)
    return RedirectResponse(url, status_code=302, headers=REDIRECT_HEADERS)
