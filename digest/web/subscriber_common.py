"""What the unsubscribe and preference pages share: the subscriber a token names, CSRF, redirects, dates."""

from __future__ import annotations

from datetime import datetime

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlmodel import Session

from digest.links import RecipientRef
from digest.web.context import TOKEN_PAGE_HEADERS, WebContext
from digest.web.security import csrf_field, csrf_ok
from storage.models import Delivery, Subscriber


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
    subscriber = session.get(Subscriber, ref.subscriber_id)
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
    delivery = session.get(Delivery, ref.delivery_id)
    return delivery if delivery is not None and delivery.subscriber_id == subscriber.id else None


def form_page(ctx: WebContext, request: Request, name: str, *, status_code: int = 200, **context) -> HTMLResponse:
    """A token page holding forms: rendered with the CSRF field's value, setting the cookie if needed."""
    carrier = Response()
    secure = ctx.settings.base_url.startswith("https://")
    csrf = csrf_field(request, carrier, ctx.settings.secret_key, secure=secure)
    response = ctx.page(name, status_code=status_code, token_page=True, csrf=csrf, **context)
    for cookie in carrier.headers.getlist("set-cookie"):
        response.headers.append("set-cookie", cookie)
    return response


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
