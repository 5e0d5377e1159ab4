"""The sunset's pages (issue 18, item 4; digest.subscribers.sunset): `/k/{token}`, where the re-permission
email's button leads, and the resume offer every old link of a dormant reader shows.

`GET /k/{token}` asks "Still want the verdicts?" and changes nothing (link scanners GET every URL in an
email); its one button POSTs ``action=keep`` with the CSRF field. A dormant reader's GET of this page, of
/u/ or of /p/ offers to resume instead: that form POSTs ``action=resume`` here. Both answer 303 to the GET
(Post/Redirect/Get), which says what was done.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from digest.subscribers import sunset
from digest.web.context import WebContext, get_context
from digest.web.subscriber_common import (
    LinkRoute, SubscriberFromToken, SubscriberLink, csrf_refused, csrf_valid, long_date, see_other, status_of,
)
from storage.sunset import dormant_since

router = APIRouter(route_class=LinkRoute)

DONE = ("keep", "resume")


@router.get("/k/{token}")
def keep_page(link: SubscriberFromToken, request: Request, done: str = "",
              ctx: WebContext = Depends(get_context)) -> Response:
    """The page behind the re-permission email's button: one question, one button, nothing changed by looking."""
    subscriber = link.subscriber
    return ctx.form_page(request, "keep.html", token=link.token, email=subscriber.email,
                         status=status_of(subscriber), asked=subscriber.repermission_sent_at is not None,
                         done=done if done in DONE else "", **resume_offer(ctx, link))


@router.post("/k/{token}")
def keep_post(link: SubscriberFromToken, request: Request, action: Annotated[str, Form()] = "",
              csrf: Annotated[str | None, Form()] = None, ctx: WebContext = Depends(get_context)) -> Response:
    """Keep (an active reader asked) or resume (a dormant one); a repeat changes nothing and says the same."""
    if not csrf_valid(ctx, request, csrf):
        return csrf_refused(ctx)
    if action not in DONE:
        return ctx.page("error.html", status_code=400, token_page=True, message="That request was not understood.")
    answer = sunset.keep if action == "keep" else sunset.resume
    answer(session=link.session, subscriber=link.subscriber, now=ctx.clock())
    return see_other(f"/k/{link.token}?done={action}")  # the change commits before this response leaves


def resume_offer(ctx: WebContext, link: SubscriberLink) -> dict:
    """What templates/web/resume_offer.html needs: ``dormant_since`` for a dormant reader, "" for anyone else."""
    if status_of(link.subscriber) != "dormant":
        return {"dormant_since": ""}
    since = dormant_since(session=link.session, subscriber_id=link.subscriber.id) or link.subscriber.updated_at
    return {"dormant_since": long_date(ctx, since)}
