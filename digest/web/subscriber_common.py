"""What the pages behind a subscriber's links share: the one dependency that turns the token in the path
into the subscriber it names (or the one bad-link page), CSRF, redirects, dates.

A route that takes ``link: SubscriberFromToken`` runs only for a token that names a subscriber; for any
other token it never runs and the answer is `WebContext.not_found`. The transaction the subscriber was read
in stays open while the route runs, and commits before the response leaves (``scope="function"``): a
reload after a 303 sees the change.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute

from digest.links import RecipientRef
from digest.web.context import TOKEN_PAGE_HEADERS, WebContext, get_context
from digest.web.security import csrf_ok
from storage import subscribers as rows
from storage.db import session_scope

if TYPE_CHECKING:
    from sqlmodel import Session

    from storage.models import Delivery, Subscriber


class BadLink(Exception):
    """Raised by a link's dependency: the route does not run, and ``page`` is the answer (see `LinkRoute`)."""

    def __init__(self, page: Response):
        super().__init__("bad link")
        self.page = page


class LinkRoute(APIRoute):
    """The route class of the routers whose dependencies may raise BadLink: it answers with the bad link's page."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            try:
                return await handler(request)
            except BadLink as bad:
                return bad.page

        return answer


@dataclass(frozen=True)
class SubscriberLink:
    """A recipient token that names a subscriber: the token, the row, what the token said, and the open
    transaction the row was read in (changes made in it commit before the response leaves)."""

    token: str
    subscriber: Subscriber
    ref: RecipientRef
    session: Session


def subscriber_link(token: str, ctx: WebContext = Depends(get_context)) -> Iterator[SubscriberLink]:
    """FastAPI dependency (use `SubscriberFromToken`): the subscriber ``token`` names, or BadLink(not found)."""
    with session_scope(ctx.engine) as session:
        found = subscriber_for(session, ctx, token)
        if found is None:
            raise BadLink(ctx.not_found())
        yield SubscriberLink(token=token, subscriber=found[0], ref=found[1], session=session)


SubscriberFromToken = Annotated[SubscriberLink, Depends(subscriber_link, scope="function")]


def subscriber_for(session: Session, ctx: WebContext, token: str) -> tuple[Subscriber, RecipientRef] | None:
    """The subscriber a recipient token was made for, or None for any bad token or a subscriber since deleted.

    The id alone is not enough: the row must have the token's tag (`RecipientRef.fits`), so a deleted
    subscriber's link never opens whoever holds the id later. A token from before tags is honoured only
    by a row stored then and, when it names a delivery, only if that delivery is the row's own: on SQLite
    an id could already have changed hands before migration 0007, and the deliveries of its first owner
    were deleted with them.
    """
    ref = ctx.recipient(token)
    if ref is None:
        return None
    subscriber = rows.find_subscriber(session=session, subscriber_id=ref.subscriber_id)
    if subscriber is None or not ref.fits(link_tag=subscriber.link_tag,
                                          accepts_untagged_links=subscriber.accepts_untagged_links):
        return None
    if ref.tag is None and ref.delivery_id is not None and delivery_of(session, subscriber, ref) is None:
        return None
    return subscriber, ref


def delivery_of(session: Session, subscriber: Subscriber, ref: RecipientRef) -> Delivery | None:
    """The delivery the token names, when it really is this subscriber's (it then credits the issue)."""
    if ref.delivery_id is None:
        return None
    return rows.delivery_of(session=session, subscriber_id=subscriber.id, delivery_id=ref.delivery_id)


def csrf_valid(ctx: WebContext, request: Request, submitted: str | None) -> bool:
    return csrf_ok(request, submitted, ctx.settings.secret_key)


def csrf_refused(ctx: WebContext) -> HTMLResponse:
    """403 for a form POST without a valid CSRF field: nothing was changed."""
    return ctx.page(
        "error.html", status_code=403, token_page=True,
        message="Nothing was changed: this form is out of date or was not sent from our page. "
                "Go back, reload the page and try again.",
    )


def see_other(url: str) -> RedirectResponse:
    """Post/Redirect/Get: a reload of the result page does not send the form again."""
    return RedirectResponse(url, status_code=303, headers=dict(TOKEN_PAGE_HEADERS))


def status_of(subscriber: Subscriber) -> str:
    return getattr(subscriber.status, "value", subscriber.status)


def long_date(ctx: WebContext, moment: datetime) -> str:
    """ "14 January 2027", in the service's time zone."""
    local = moment.astimezone(ctx.settings.tz)
    return f"{local.day} {local:%B %Y}"
