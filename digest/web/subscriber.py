"""Unsubscribe (`/u/{token}`) and, from subscriber_preferences, the preference centre (`/p/{token}`).

The signed recipient token in the URL is the credential: no account, no password. A GET never changes
anything, because link scanners and prefetchers GET every URL in an email. Two kinds of POST unsubscribe:

- RFC 8058 one-click, sent by the mail provider (Gmail, Yahoo…) with the body `List-Unsubscribe=One-Click`:
  no cookie, no CSRF field, answered at once with a tiny 200;
- the button on our page, a browser form, which must carry the CSRF field.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import PlainTextResponse, Response

from digest.subscribers import subscriptions
from digest.web import subscriber_preferences
from digest.web.context import TOKEN_PAGE_HEADERS, WebContext, get_context
from digest.web.subscriber_common import (
    csrf_refused, csrf_valid, delivery_of, form_page, see_other, status_of, subscriber_for,
)
from storage.db import session_scope

router = APIRouter()
router.include_router(subscriber_preferences.router)

ONE_CLICK = "One-Click"  # RFC 8058 section 3.1: the POST body is exactly List-Unsubscribe=One-Click


@router.get("/u/{token}")
def unsubscribe_page(token: str, request: Request, done: str = "",
                     ctx: WebContext = Depends(get_context)) -> Response:
    """The page behind the email's unsubscribe link: one button, nothing changed by looking."""
    with session_scope(ctx.engine) as session:
        found = subscriber_for(session, ctx, token)
        if found is None:
            return ctx.not_found()
        subscriber, _ = found
        status, email = status_of(subscriber), subscriber.email
    return form_page(ctx, request, "unsubscribe.html", token=token, status=status, email=email, done=bool(done))


@router.post("/u/{token}")
def unsubscribe_post(
    token: str,
    request: Request,
    one_click: Annotated[str | None, Form(alias="List-Unsubscribe")] = None,
    action: Annotated[str, Form()] = "unsubscribe",
    csrf: Annotated[str | None, Form()] = None,
    ctx: WebContext = Depends(get_context),
) -> Response:
    if one_click == ONE_CLICK:
        return _one_click(ctx, token)
    now = ctx.clock()
    with session_scope(ctx.engine) as session:
        found = subscriber_for(session, ctx, token)
        if found is None:  # before the CSRF check: a token naming nobody gets the one 404, whatever else
            return ctx.not_found()
        if not csrf_valid(ctx, request, csrf):
            return csrf_refused(ctx)
        if action not in ("unsubscribe", "resubscribe"):
            return ctx.page("error.html", status_code=400, token_page=True,
                            message="That request was not understood.")
        subscriber, ref = found
        if action == "unsubscribe":
            _unsubscribe(session, subscriber, ref, now=now, detail="unsubscribe page")
        else:
            subscriptions.resubscribe(session=session, subscriber=subscriber, source="web", now=now)
    return see_other(f"/u/{token}?done=1")  # committed above, before this response leaves


def _one_click(ctx: WebContext, token: str) -> Response:
    """RFC 8058: unsubscribe at once; a repeat is answered the same and changes nothing."""
    with session_scope(ctx.engine) as session:
        found = subscriber_for(session, ctx, token)
        if found is None:
            return ctx.not_found()
        subscriber, ref = found
        _unsubscribe(session, subscriber, ref, now=ctx.clock(), detail="one-click (RFC 8058)")
    return PlainTextResponse("You are unsubscribed.\n", headers=dict(TOKEN_PAGE_HEADERS))


def _unsubscribe(session, subscriber, ref, *, now, detail: str) -> None:
    delivery = delivery_of(session, subscriber, ref)
    subscriptions.unsubscribe(
        session=session, subscriber=subscriber, source="web", now=now, detail=detail,
        delivery_id=delivery.id if delivery else None, issue_id=delivery.issue_id if delivery else None,
    )
