"""The preference centre, `GET/POST /p/{token}`: categories, pause, unsubscribe or resubscribe, export, delete.

Every form on the page POSTs here with an `action` and the CSRF field. A successful change answers 303
to `GET /p/{token}?saved=ACTION` (Post/Redirect/Get), which shows what was done in a role="status"
element; the download answers with the JSON file itself; a deletion goes to `/p/-/deleted`, since the
token names nobody any more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlmodel import Session

from digest.subscribers import subscriptions
from digest.categories import followable, stored_categories
from digest.claim.selection import category_key, followed
from digest.web.context import TOKEN_PAGE_HEADERS, WebContext, get_context
from digest.web.subscriber_common import (
    csrf_refused, csrf_valid, form_page, long_date, see_other, status_of, subscriber_for,
)
from storage.db import session_scope
from storage.models import Comparison, Subscriber

router = APIRouter()

EXPORT_FILENAME = "weekly-ai-tool-verdicts-my-data.json"


@dataclass(frozen=True)
class CategoryChoice:
    key: str  # category_key: what is stored
    name: str  # the spelling shown
    checked: bool


@router.get("/p/-/deleted")
def deleted_page(ctx: WebContext = Depends(get_context)) -> Response:
    return ctx.page("preferences_deleted.html", token_page=True)


@router.get("/p/{token}")
def preferences_page(token: str, request: Request, saved: str = "",
                     ctx: WebContext = Depends(get_context)) -> Response:
    with session_scope(ctx.engine) as session:
        found = subscriber_for(session, ctx, token)
        if found is None:
            return ctx.not_found()
        return _render(ctx, request, session, found[0], token, saved=saved)


@router.post("/p/{token}")
def preferences_post(
    token: str,
    request: Request,
    action: Annotated[str, Form()] = "",
    category: Annotated[list[str], Form()] = [],  # noqa: B006 — FastAPI copies defaults per request
    weeks: Annotated[str, Form()] = "",
    confirm: Annotated[str, Form()] = "",
    csrf: Annotated[str | None, Form()] = None,
    ctx: WebContext = Depends(get_context),
) -> Response:
    now = ctx.clock()
    with session_scope(ctx.engine) as session:
        found = subscriber_for(session, ctx, token)
        if found is None:  # before the CSRF check: a token naming nobody gets the one 404, whatever else
            return ctx.not_found()
        if not csrf_valid(ctx, request, csrf):
            return csrf_refused(ctx)
        subscriber = found[0]

        def again(error: str, status_code: int = 400) -> Response:
            return _render(ctx, request, session, subscriber, token, error=error, status_code=status_code)

        if action == "categories":
            allowed = {choice.key for choice in _choices(session, subscriber)}  # each passed digest.categories' rule
            chosen = stored_categories(name for name in category if category_key(name) in allowed)
            subscriptions.set_categories(session=session, subscriber=subscriber, categories=chosen, now=now)
        elif action == "pause":
            if status_of(subscriber) != "active":
                return again("Only an active subscription can be paused.", 409)
            try:
                subscriptions.pause(session=session, subscriber=subscriber, weeks=int(weeks or 0), now=now)
            except ValueError:
                return again("Choose how long to pause: 1, 2, 4 or 8 weeks.")
        elif action == "resume":
            subscriptions.resume(session=session, subscriber=subscriber, now=now)
        elif action == "unsubscribe":
            subscriptions.unsubscribe(session=session, subscriber=subscriber, source="web", now=now,
                                      detail="preference centre")
        elif action == "resubscribe":
            if not subscriptions.resubscribe(session=session, subscriber=subscriber, source="web", now=now):
                return again(_cannot_resubscribe(status_of(subscriber)), 409)
        elif action == "export":
            return _export(session, subscriber)
        elif action == "delete":
            if confirm != "yes":
                return again("Nothing was deleted: tick the box to confirm, then press “Delete my data”.")
            subscriptions.forget(session=session, subscriber=subscriber, now=now)
            return see_other("/p/-/deleted")
        else:
            return again("That request was not understood.")
    return see_other(f"/p/{token}?saved={action}")  # committed above, before this response leaves


def _render(ctx: WebContext, request: Request, session: Session, subscriber: Subscriber, token: str, *,
            saved: str = "", error: str = "", status_code: int = 200) -> Response:
    status = status_of(subscriber)
    paused = subscriber.paused_until if subscriber.paused_until and subscriber.paused_until > ctx.clock() else None
    choices = _choices(session, subscriber)
    return form_page(
        ctx, request, "preferences.html", status_code=status_code, token=token, email=subscriber.email,
        status=status, choices=choices, paused_until=long_date(ctx, paused) if paused else "",
        message=_message(saved, status, choices, paused is not None), error=error,
        pause_weeks=subscriptions.PAUSE_WEEKS,
    )


def _choices(session: Session, subscriber: Subscriber) -> list[CategoryChoice]:
    """The categories in the store, in their most common spelling, plus any the subscriber follows that
    no comparison has yet (kept, so saving the form does not silently drop them).

    Only names the comparison contract accepts (digest.categories): a comparison imported before it
    forbade ``;`` may be filed under "AI; Agents", and following that would store "ai" and "agents".
    Such a comparison still reaches everyone who follows every category. A stored string written by the
    old form ("ai; agents") is read the way the fan-out reads it: as "ai" and "agents".
    """
    counts: dict[str, dict[str, int]] = {}
    for name, count in session.execute(select(Comparison.category, func.count()).group_by(Comparison.category)):
        if followable(name):
            spellings = counts.setdefault(category_key(name), {})
            spellings[name.strip()] = spellings.get(name.strip(), 0) + count
    names = {key: min(spellings, key=lambda s: (-spellings[s], s)) for key, spellings in counts.items() if key}
    mine = {category_key(key) for key in followed(subscriber.categories)}
    mine = {key for key in mine if followable(key)}
    for key in mine - names.keys():
        names[key] = key
    return sorted((CategoryChoice(key=key, name=name, checked=key in mine) for key, name in names.items()),
                  key=lambda choice: choice.name.casefold())


def _message(saved: str, status: str, choices: list[CategoryChoice], paused: bool) -> str:
    """What the last change did, in words, from the state now stored (a reload shows the same)."""
    if saved == "categories":
        picked = [choice.name for choice in choices if choice.checked]
        return f"Saved. You will get: {', '.join(picked)}." if picked else "Saved. You will get every category."
    if saved == "pause" and paused:
        return "Paused. You will get no email until the date shown below."
    if saved == "resume" and not paused:
        return "Resumed. You will get the next issue."
    if saved == "unsubscribe" and status == "unsubscribed":
        return "You are unsubscribed from everything. You will get no more emails from us."
    if saved == "resubscribe" and status == "active":
        return "Welcome back: you are subscribed again."
    return ""


def _cannot_resubscribe(status: str) -> str:
    if status in ("bounced", "complained"):
        return ("Sorry, we cannot resubscribe this address from here: " + (
            "emails to it bounced" if status == "bounced" else "an email to it was reported as spam")
            + ", so we stopped sending to it for good. If you think this is a mistake, reply to any of our "
              "emails and we will look into it.")
    return "You are already subscribed."


def _export(session: Session, subscriber: Subscriber) -> Response:
    data = subscriptions.export_data(session=session, subscriber=subscriber)
    headers = {**TOKEN_PAGE_HEADERS, "Content-Disposition": f'attachment; filename="{EXPORT_FILENAME}"'}
    return Response(json.dumps(data, indent=2, ensure_ascii=False), media_type="application/json",
                    headers=headers)
