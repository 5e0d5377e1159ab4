"""The push API (issue 16): the comparison site publishes and unpublishes comparisons itself.

`PUT /api/comparisons/{slug}`: the body is one comparison in the import file's format (one item of the
array contracts/comparison.schema.json describes), checked by the import's own checks
(`digest.importing.comparison_file.comparison_problems`) and stored by its upsert
(`digest.importing.comparisons.store_comparison`). 201 when new, 200 when updated, 200 and nothing
written for the same body again (``updated_at`` stays); 422 ``{"errors": [{"path", "message"}]}``
listing every problem, the body's slug differing from the address's included, with nothing stored.

`DELETE /api/comparisons/{slug}`: unpublish. A comparison no issue has claimed is taken out of the store,
so no later issue carries it (a later PUT stores it again); one already claimed is left as it is, because
the issues that carry it and the archive keep it. 404 for a slug the store does not hold.

Both need ``Authorization: Bearer $DIGEST_API_TOKEN``: one 401 whatever is wrong with it (missing,
malformed, wrong), compared in constant time; 503 while no token is configured. A body past 1 MB never gets
here: `digest.web.limits` answers 413 while it streams. Every answer is JSON, ``no-store``, with the
security headers of every response (`digest.web.security`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from datetime import datetime
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from digest.importing.comparison_file import comparison_problems, parse_json
from digest.importing.comparisons import store_comparison
from digest.quoting import quoted
from digest.web.context import WebContext, get_context
from storage.db import session_scope
from storage.faults import Conflict
from storage.imports import claiming_week, delete_unclaimed_comparison

if TYPE_CHECKING:
    from sqlalchemy import Engine

router = APIRouter()
log = logging.getLogger("digest.web")

PATH = "/api/comparisons/{slug}"
NO_STORE = {"Cache-Control": "no-store"}
STORED = {"created": 201, "updated": 200, "unchanged": 200}
CHECKED_ON_THE_LOOP = 64 * 1024  # bytes of body; 0.1 ms of checks at 64 KB (a demo comparison is 3 KB)


def json_answer(body: dict, status_code: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    """An API answer: JSON, never cached (every API of the site's: this one, digest.web.api_votes)."""
    return JSONResponse(body, status_code=status_code, headers={**NO_STORE, **(headers or {})})


def refused_without_token(request: Request, ctx: WebContext, *, api: str = "push API") -> JSONResponse | None:
    """The answer for a request without the configured token, or None when it carries it. Shared by the
    site's APIs (this one, digest.web.api_votes): ``api`` names the one asked in the 503."""
    expected = ctx.settings.api_token.get_secret_value().strip()  # a line break pasted from a file is not in it
    if not expected:
        log.error("%s request refused: DIGEST_API_TOKEN is not set", api)
        return json_answer({"error": f"the {api} is off: no API token is configured"}, 503)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    # Digests of both, compared in constant time: neither the token's characters nor its length show in
    # how long a wrong guess takes. A header is Latin-1 text; the token is compared as the bytes sent.
    sent = hashlib.sha256(given.strip().encode("latin-1")).digest()
    if scheme.lower() == "bearer" and hmac.compare_digest(sent, hashlib.sha256(expected.encode()).digest()):
        return None
    return json_answer({"error": "send the API token as Authorization: Bearer <token>"}, 401,
                   {"WWW-Authenticate": 'Bearer realm="digest"'})


@router.put(PATH, include_in_schema=False)
async def put_comparison(slug: str, request: Request, ctx: WebContext = Depends(get_context)) -> JSONResponse:
    refused = refused_without_token(request, ctx)
    if refused is not None:
        return refused
    raw = await request.body()  # at most limits.API.bytes: BodyLimits cut off anything longer
    # A pushed comparison of a few KB is checked in ~0.1 ms (~0.7 ms to word a refusal): on the event loop,
    # as any request's parsing is. A bigger body (up to 1 MB) is checked on a thread of the pool.
    if len(raw) <= CHECKED_ON_THE_LOOP:
        item, errors = _checked(raw, slug)
    else:
        item, errors = await run_in_threadpool(_checked, raw, slug)
    if errors:
        return json_answer({"errors": errors}, 422)
    outcome = await ctx.write(_store, ctx.engine, item, ctx.clock())  # the process's writing thread
    return json_answer({"slug": slug, "result": outcome}, STORED[outcome])


@router.delete(PATH, include_in_schema=False)
async def delete_comparison(slug: str, request: Request, ctx: WebContext = Depends(get_context)) -> JSONResponse:
    refused = refused_without_token(request, ctx)
    if refused is not None:
        return refused
    removed, week = await run_in_threadpool(_unpublish, ctx.engine, slug)
    if removed:
        return json_answer({"slug": slug, "result": "unpublished"})
    if week is not None:
        return json_answer({"slug": slug, "result": "kept", "week": week,
                        "message": f"issue {week} already carries it: it and the archive keep it; "
                                   "no later issue will"})
    return json_answer({"error": f"no comparison with the slug {quoted(slug)}"}, 404)


def _checked(raw: bytes, slug: str) -> tuple[object, list[dict[str, str]]]:
    """The body as a comparison, and every problem with it as {"path", "message"} (none: it may be stored)."""
    try:
        item = parse_json(raw)
    except ValueError as exc:
        return None, [{"path": "", "message": str(exc)}]
    problems = comparison_problems(item)
    given = item.get("slug") if isinstance(item, dict) else None
    if isinstance(given, str) and given != slug:
        problems.append(("slug", f"{quoted(given)} is not the slug in the address ({quoted(slug)}): "
                                 "PUT each comparison to /api/comparisons/<its slug>"))
    return item, [{"path": where, "message": what} for where, what in problems]


def _store(engine: Engine, item: dict, now: datetime) -> str:
    try:
        return store_comparison(engine=engine, item=item, now=now)
    except Conflict:  # a PUT of the same new slug committed first: this one is now an update (or unchanged)
        return store_comparison(engine=engine, item=item, now=now)


def _unpublish(engine: Engine, slug: str) -> tuple[bool, str | None]:
    """Take comparison ``slug`` out of every later issue: (removed, week of the issue that claimed it).

    (True, None): it was in no issue and is gone from the store. (False, "2026-W48"): an issue claimed it,
    and it stays as it is. (False, None): no such comparison.
    """
    with session_scope(engine) as session:
        if delete_unclaimed_comparison(session=session, slug=slug):
            return True, None
        return False, claiming_week(session=session, slug=slug)
