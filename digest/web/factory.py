"""The FastAPI application: `create_app(settings)`; `digest serve` runs it on uvicorn."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from digest.config import Settings
from digest.services import build_services
from digest.subscribers.signup_mailer import SignupMailer
from digest.transports import Transport, make_transport
from digest.web.context import WebContext, web_environment
from digest.web.limits import BodyLimits
from digest.web.security import SecurityHeaders
from digest.web.tracking import answer_pixel, hand_over_open, pixel_token
from storage.types import utcnow

if TYPE_CHECKING:
    from sqlalchemy import Engine


class DigestApp(FastAPI):
    """FastAPI, wrapped. A GET of the open pixel is answered before anything else (`answer_pixel`); every
    other request passes SecurityHeaders, then BodyLimits, then FastAPI's own stack, so that the headers
    reach even Starlette's last-resort 500 and no body reaches a route past its limit."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._guarded = SecurityHeaders(BodyLimits(super().__call__))

    def hand_over_open(self, token: str, user_agent: bytes | None):
        """For the protocol's fast path (digest.web.server): the open of a pixel fetch, handed over."""
        return hand_over_open(self.state.ctx, token, user_agent)

    async def __call__(self, scope, receive, send) -> None:
        token = pixel_token(scope)
        if token:
            await answer_pixel(self.state.ctx, scope, token, send)
        else:
            await self._guarded(scope, receive, send)


def create_app(
    settings: Settings, *, engine: Engine | None = None, transport: Transport | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> FastAPI:
    # The web app sends nothing in bulk, so its transport is the configured one without the senders' shared
    # rate limit; signup mail goes out from the signup mailer's own process (below).
    services = build_services(settings, engine=engine, transport=transport or make_transport(settings))
    app = DigestApp(title="Weekly AI Tool Verdicts", docs_url=None, redoc_url=None, openapi_url=None,
                    lifespan=_lifespan)
    app.state.ctx = WebContext(
        settings=services.settings,
        engine=services.engine,
        signer=services.signer,
        links=services.links,
        pages=web_environment(),
        clock=clock,
    )
    # Signup emails go out from a process of their own (digest.subscribers.signup_mailer); a transport passed in here
    # (tests) is used by a thread instead.
    app.state.signup_mailer = SignupMailer(settings, transport=transport)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            return app.state.ctx.not_found()
        return app.state.ctx.page("error.html", status_code=exc.status_code, message=exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError):
        return app.state.ctx.page("error.html", status_code=400, message="That request was not understood.")

    @app.exception_handler(Exception)
    async def _server_error(request: Request, exc: Exception):
        # Starlette logs nothing itself: the exception goes on to uvicorn, which logs its traceback.
        return app.state.ctx.page("error.html", status_code=500,
                                  message="Something went wrong on our side. Please try again in a few minutes.")

    for router in _routers():
        app.include_router(router)
    answer_head_like_get(app.routes)
    return app


def answer_head_like_get(routes) -> None:
    """HEAD wherever GET, on every route however deeply its router is included, without a route saying so.

    Link checkers, uptime monitors and mail scanners send HEAD; FastAPI answered them 405. A HEAD runs
    the GET's handler (uvicorn sends its status and headers, never its body), so a handler that records
    something on GET checks the method: the click redirect does; the pixel's GET never reaches its route.
    """
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            answer_head_like_get(included.routes)
        elif "GET" in (getattr(route, "methods", None) or ()):
            route.methods.add("HEAD")


@asynccontextmanager
async def _lifespan(app: FastAPI):
    yield
    # uvicorn has answered every request by now: the pixel writer commits what it was sent and exits.
    writer = app.state.ctx.open_writer_if_started()
    if writer is not None:
        await writer.close()
    await asyncio.to_thread(app.state.signup_mailer.close)  # sends the letters still waiting
    await asyncio.to_thread(app.state.ctx.close_writes)


def _routers():
    """Each part of the app is a router in a module of its own."""
    import importlib

    # The routes that take many requests first: FastAPI tries each router in turn (3–4 µs each), and no two
    # routers answer the same path, so the order decides nothing else. The pixel never gets here (DigestApp).
    return [importlib.import_module(f"digest.web.{name}").router
            for name in ("votes", "api", "tracking", "home", "subscriber", "keep", "signup", "webhook", "api_votes",
                         "archive", "static")]
