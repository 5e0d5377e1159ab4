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
from digest.web.keep import resume_offer
from digest.web.context import TOKEN_PAGE_HEADERS, WebContext, get_context
from digest.web.subscriber_common import (
    LinkRoute, SubscriberFromToken, SubscriberLink, csrf_refused, csrf_valid, delivery_of, see_other, status_of,
)

router = APIRouter(route_class=LinkRoute)
router.include_router(subscriber_preferences.router)

ONE_CLICK = "One-Click"  # RFC 8058 section 3.1: the POST body is exactly List-Unsubscribe=One-Click


@router.get("/u/{token}")
def unsubscribe_page(link: SubscriberFromToken, request: Request, done: str = "",
                     ctx: WebContext = Depends(get_context)) -> Response:
    """The page behind the email's unsubscribe link: one button, nothing changed by looking."""
    return ctx.form_page(request, "unsubscribe.html", token=link.token, status=status_of(link.subscriber),
                         email=link.subscriber.email, done=bool(done), **resume_offer(ctx, link))


@router.post("/u/{token}")
def unsubscribe_post(
    link: SubscriberFromToken,
    request: Request,
    one_click: Annotated[str | None, Form(alias="List-Unsubscribe")] = None,
    action: Annotated[str, Form()] = "unsubscribe",
    csrf: Annotated[str | None, Form()] = None,
    ctx: WebContext = Depends(get_context),
) -> Response:
    """A token naming nobody got the one 404 before anything here, whatever else the request holds."""
    if one_click == ONE_CLICK:
        _unsubscribe(link, now=ctx.clock(), detail="one-click (RFC 8058)")
        # RFC 8058: unsubscribed at once; a repeat is answered the same and changes nothing.
        return PlainTextResponse("You are unsubscribed.\n", headers=dict(TOKEN_PAGE_HEADERS))
    if not csrf_valid(ctx, request, csrf):
        return csrf_refused(ctx)
    if action not in ("unsubscribe", "resubscribe"):
        return ctx.page("error.html", status_code=400, token_page=True, message="That request was not understood.")
    now = ctx.clock()
    if action == "unsubscribe":
        _unsubscribe(link, now=now, detail="unsubscribe page")
    else:
        subscriptions.resubscribe(session=link.session, subscriber=link.subscriber, source="web", now=now)
    return see_other(f"/u/{link.token}?done=1")  # the change commits before this response leaves


def _unsubscribe(link: SubscriberLink, *, now, detail: str) -> None:
    delivery = delivery_of(link.session, link.subscriber, link.ref)
    subscriptions.unsubscribe(
        session=link.session, subscriber=link.subscriber, source="web", now=now, detail=detail,
        delivery_id=delivery.id if delivery else None, issue_id=delivery.issue_id if delivery else None,
    )
