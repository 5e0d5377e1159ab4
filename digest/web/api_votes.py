"""The votes API (`GET /api/votes`, issue 17): the site pulls the readers' vote events.

`GET /api/votes?after=CURSOR&limit=N` answers ``{"events": [...], "next": CURSOR}``: the vote events after
CURSOR in the order they were cast, each in the shape the site push sends too
(`digest.votes.casting.event_json`), at most N (default 100, at most 1000). No ``after``: from the first
event. ``next`` is what to send as ``after`` the next time; with nothing new it is the cursor asked with,
so the site can poll with it. The cursor is the last event id as a string: opaque to the site, stable,
and the same one the push keeps (storage.votes.events_after). A bad cursor or limit is 422
``{"errors": [{"path", "message"}]}``.

The same bearer token as the push API (`digest.web.api.refused_without_token`): one 401 for a missing or
wrong token, 503 while DIGEST_API_TOKEN is unset. Every answer is JSON and ``no-store``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from digest.quoting import quoted
from digest.votes.casting import event_json
from digest.web.api import json_answer, refused_without_token
from digest.web.context import WebContext, get_context
from storage.db import session_scope
from storage.votes import events_after

if TYPE_CHECKING:
    from sqlalchemy import Engine

router = APIRouter()

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000  # events per page: ~200 KB of JSON, one quick indexed range read
MAX_CURSOR_DIGITS = 18  # an id fits a signed 64-bit integer, as both databases store it


@router.get("/api/votes", include_in_schema=False)
async def get_votes(request: Request, ctx: WebContext = Depends(get_context)) -> JSONResponse:
    refused = refused_without_token(request, ctx, api="votes API")
    if refused is not None:
        return refused
    after, limit, errors = _page(request.query_params.get("after"), request.query_params.get("limit"))
    if errors:
        return json_answer({"errors": errors}, 422)
    events = await run_in_threadpool(_events, ctx.engine, after, limit)
    following = str(events[-1]["id"]) if events else str(after)
    return json_answer({"events": events, "next": following})


def _page(after: str | None, limit: str | None) -> tuple[int, int, list[dict[str, str]]]:
    """The cursor and the page size asked for, and every problem with them as {"path", "message"}."""
    errors = []
    cursor = _whole_number(after, default=0)
    if cursor is None:
        errors.append({"path": "after", "message": f"{quoted(after or '', 40)} is not a cursor this API "
                                                   "gave: send the `next` of the last answer, or no `after`"})
    size = _whole_number(limit, default=DEFAULT_LIMIT)
    if size is None or not 1 <= size <= MAX_LIMIT:
        errors.append({"path": "limit", "message": f"{quoted(limit or '', 40)} is not a number of events "
                                                   f"from 1 to {MAX_LIMIT}"})
    return cursor or 0, size or DEFAULT_LIMIT, errors


def _whole_number(value: str | None, *, default: int) -> int | None:
    """``value`` as a whole number of ASCII digits, ``default`` when absent, None when it is anything else."""
    if value is None:
        return default
    if not value.isascii() or not value.isdigit() or len(value) > MAX_CURSOR_DIGITS:
        return None
    return int(value)


def _events(engine: Engine, after: int, limit: int) -> list[dict]:
    with session_scope(engine) as session:
        return [event_json(event) for event in events_after(session=session, after=after, limit=limit)]
