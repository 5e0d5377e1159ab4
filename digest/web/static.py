"""The one stylesheet (CSP allows styles from 'self' only, no inline styles) and a health check."""

from __future__ import annotations

from functools import lru_cache

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response

from digest.render.environment import templates_dir

router = APIRouter()


@lru_cache(maxsize=1)
def _stylesheet() -> bytes:
    return (templates_dir() / "web" / "site.css").read_bytes()


@router.get("/static/site.css", include_in_schema=False)
def stylesheet() -> Response:
    return Response(_stylesheet(), media_type="text/css", headers={"Cache-Control": "public, max-age=3600"})


@router.get("/healthz", include_in_schema=False)
def health() -> PlainTextResponse:
    return PlainTextResponse("ok")
