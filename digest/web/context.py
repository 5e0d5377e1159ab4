"""What every route needs, built once per app: settings, engine, signer, links, templates."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, Response

from digest.config import Settings
from digest.links import BadToken, Links, RecipientRef, Signer
from digest.track.open_writer import OpenWriter
from digest.web.pages import web_environment  # noqa: F401 — where the app has always found it
from digest.web.security import csrf_field
from digest.web.webhook_store import WebhookStore

if TYPE_CHECKING:
    from sqlalchemy import Engine

T = TypeVar("T")

WRITERS_POSTGRES = 4  # writing threads of a web process on PostgreSQL (WebContext.write)

# Token pages (unsubscribe, preferences, confirm) must not leak the token to other sites or caches.
TOKEN_PAGE_HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


@dataclass
class WebContext:
    settings: Settings
    engine: Engine
    signer: Signer
    links: Links
    pages: jinja2.Environment
    clock: Callable[[], datetime]
    _open_writer: OpenWriter | None = field(default=None, init=False, repr=False)
    _writes: ThreadPoolExecutor | None = field(default=None, init=False, repr=False)
    _webhook_store: WebhookStore | None = field(default=None, init=False, repr=False)

    def page(self, name: str, *, status_code: int = 200, token_page: bool = False, **context) -> HTMLResponse:
        """Render templates/web/NAME (autoescaped) as an HTML response."""
        html = self.pages.get_template(name).render(settings=self.settings, **context)
        headers = dict(TOKEN_PAGE_HEADERS) if token_page else {}
        return HTMLResponse(html, status_code=status_code, headers=headers)

    def form_page(self, request: Request, name: str, *, status_code: int = 200, token_page: bool = True,
                  headers: dict[str, str] | None = None, **context) -> HTMLResponse:
        """A page holding forms (signup, unsubscribe, preferences): rendered with the CSRF field's value as
        ``csrf``, with ``headers``, and setting the CSRF cookie when the browser has none (digest.web.security)."""
        carrier = Response()
        secure = self.settings.base_url.startswith("https:")  # the scheme: links go out over HTTPS
        csrf = csrf_field(request, carrier, self.settings.secret_key, secure=secure)
        response = self.page(name, status_code=status_code, token_page=token_page, csrf=csrf, **context)
        response.headers.update(headers or {})
        for cookie in carrier.headers.getlist("set-cookie"):
            response.headers.append("set-cookie", cookie)
        return response

    def not_found(self) -> HTMLResponse:
        """The one answer to any bad token or unknown page: the same whatever was wrong, revealing nothing."""
        return self.page("not_found.html", status_code=404, token_page=True)

    async def write(self, work: Callable[..., T], *args) -> T:
        """``work(*args)`` on this process's writing threads: the short write transactions of the routes that
        take many writes (a vote, the push API's PUT). One thread on SQLite, which takes one writer at a
        time anyway: 32 requests' threads queued on its lock (storage.db) spent more CPU handing the lock
        and the GIL around than on their transactions (vote POST: 1.4 ms of CPU a request against 0.64 ms
        this way). PostgreSQL writes concurrently and each statement waits for its round trip, so there
        WRITERS_POSTGRES threads: the PUT's 330 req/s became 640 (8 threads: 660; the vote's order lock,
        storage.votes, keeps votes one at a time whatever the number)."""
        if self._writes is None:
            writers = 1 if self.engine.dialect.name == "sqlite" else WRITERS_POSTGRES
            self._writes = ThreadPoolExecutor(max_workers=writers, thread_name_prefix="digest-writes")
        return await asyncio.get_running_loop().run_in_executor(self._writes, work, *args)

    def close_writes(self) -> None:
        """Let the writing threads finish what they were given and end (the app's shutdown)."""
        if self._writes is not None:
            self._writes.shutdown(wait=True)
        if self._webhook_store is not None:
            self._webhook_store.close()

    def webhook_store(self) -> WebhookStore:
        """The Event Webhook's own threads and bounds (digest.web.webhook_store): its posts of ~1,000 events
        do not queue the votes' short writes behind them."""
        if self._webhook_store is None:
            self._webhook_store = WebhookStore(dialect=self.engine.dialect.name,
                                               busy_seconds=self.settings.webhook_busy_seconds)
        return self._webhook_store

    def open_writer(self) -> OpenWriter:
        """This process's pixel writer (a child process, started by the first open it records)."""
        if self._open_writer is None:
            self._open_writer = OpenWriter(database_url=self.engine.url.render_as_string(hide_password=False),
                                           window_seconds=self.settings.machine_open_seconds)
        return self._open_writer

    def open_writer_if_started(self) -> OpenWriter | None:
        return self._open_writer

    def recipient(self, token: str) -> RecipientRef | None:
        try:
            return self.signer.read_recipient_token(token)
        except BadToken:
            return None


async def get_context(request: Request) -> WebContext:
    """FastAPI dependency: `ctx: WebContext = Depends(get_context)`. A coroutine, so that FastAPI reads the
    attribute on the event loop instead of sending a thread to fetch it (~100 µs a request, every route)."""
    return request.app.state.ctx
