"""`GET /`: the front door. What this is, a way to subscribe, the archive and the comparison site.

Someone who types the bare domain (or follows it from the footer of an email) lands here rather than on
a 404. Nothing on it is per visitor, so it is cached like the archive; the signup form stays at
/subscribe, which sets the CSRF cookie that this page, being cacheable, must not.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from digest.web.context import WebContext, get_context

router = APIRouter()

# Nothing here changes between deploys of the settings: five minutes, as for the archive.
CACHE = {"Cache-Control": "public, max-age=300"}


@router.get("/")
def home(ctx: WebContext = Depends(get_context)) -> Response:
    page = ctx.page("home.html")
    page.headers.update(CACHE)
    return page
