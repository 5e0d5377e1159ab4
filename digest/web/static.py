"""The one stylesheet and the one script (CSP: styles from 'self' only; scripts from 'self' only on the pages
that load one, never inline), and a health check."""

from __future__ import annotations

from functools import lru_cache

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse, Response

from digest.render.environment import templates_dir
from digest.web.security import CONTENT_SECURITY_POLICY

router = APIRouter()

# A page that loads /static/reader-zone.js sends this policy instead of the site's (a header the app sets
# is kept, digest.web.security): the site's, plus scripts from our own origin. Inline script stays refused.
SCRIPT_PAGE_HEADERS = {"Content-Security-Policy": f"{CONTENT_SECURITY_POLICY}; script-src 'self'"}
_CACHE = {"Cache-Control": "public, max-age=3600"}


@lru_cache(maxsize=2)
def _asset(name: str) -> bytes:
    return (templates_dir() / "web" / name).read_bytes()


@router.get("/static/site.css", include_in_schema=False)
def stylesheet() -> Response:
    return Response(_asset("site.css"), media_type="text/css", headers=_CACHE)


@router.get("/static/reader-zone.js", include_in_schema=False)
def reader_zone_script() -> Response:
    """Fills a form's hidden time zone field from the browser's (issue 19)."""
    return Response(_asset("reader-zone.js"), media_type="text/javascript", headers=_CACHE)


@router.get("/healthz", include_in_schema=False)
def health() -> PlainTextResponse:
    return PlainTextResponse("ok")
