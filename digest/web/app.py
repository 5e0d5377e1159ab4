"""The FastAPI application: `create_app(settings)`; `digest serve` runs it on uvicorn."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import Engine
from starlette.exceptions import HTTPException as StarletteHTTPException

from digest.app import links_for
from digest.config import Settings
from digest.transports import Transport, make_transport
from digest.web.context import WebContext, web_environment
from digest.web.security import SecurityHeaders
from digest.web.tracking import OpenPixelFastPath
from storage.db import make_engine
from storage.types import utcnow


def create_app(
    settings: Settings, *, engine: Engine | None = None, transport: Transport | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> FastAPI:
    links = links_for(settings)
    app = FastAPI(title="Weekly AI Tool Verdicts", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ctx = WebContext(
        settings=settings,
        engine=engine or make_engine(settings.database_url),
        signer=links.signer,
        links=links,
        transport=transport or make_transport(settings),
        pages=web_environment(),
        clock=clock,
    )
    app.add_middleware(SecurityHeaders)
    app.add_middleware(OpenPixelFastPath)  # outermost: the pixel skips the rest of the stack

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            return app.state.ctx.not_found()
        return app.state.ctx.page("error.html", status_code=exc.status_code, message=exc.detail)

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError):
        return app.state.ctx.page("error.html", status_code=400, message="That request was not understood.")

    for router in _routers():
        app.include_router(router)
    return app


def _routers():
    """Each part of the app is a router in a module of its own."""
    import importlib

    return [importlib.import_module(f"digest.web.{name}").router
            for name in ("tracking", "subscriber", "signup", "webhook", "archive", "static")]
