"""The confirmation link a signup sends: `GET /confirm/{token}` shows what confirming will store, and its
button (`POST`) stores it (digest.subscribers.confirmation).

No CSRF field on the confirm form: the signed token in the URL is the credential, and only the owner of
the address has it. GET never changes anything: link scanners fetch it. Every failure (forged, altered,
expired, gone, left since) gets the one page, `confirm_invalid.html`, from the link's dependency.

The POST that activates a pending reader also claims their welcome in the same transaction
(digest.subscribers.welcome); the claimed welcome goes to the signup mailer once the page is sent, so after
the commit, and the page never waits for the provider.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.background import BackgroundTask

from digest.links import BadToken
from digest.subscribers import confirmation
from digest.subscribers.confirmation import ConfirmRef, ConfirmTokens
from digest.subscribers.welcome import Welcome
from digest.web.context import WebContext, get_context
from digest.web.subscriber_common import BadLink, LinkRoute
from storage.db import session_scope
from storage.models import SubscriberStatus
from storage.welcome import claim_welcome

if TYPE_CHECKING:
    from sqlmodel import Session

    from storage.models import Subscriber

router = APIRouter(route_class=LinkRoute)


@dataclass(frozen=True)
class ConfirmLink:
    """A confirmation token that may confirm its subscriber, read in the transaction that stays open while
    the route runs (it commits before the response leaves)."""

    token: str
    ref: ConfirmRef
    subscriber: Subscriber
    session: Session


def confirm_link(token: str, ctx: WebContext = Depends(get_context)) -> Iterator[ConfirmLink]:
    """FastAPI dependency (use `ConfirmFromToken`): what the link may confirm (confirmation.confirmable), or
    BadLink with the one invalid-link page."""
    try:
        ref = ConfirmTokens.for_settings(ctx.settings, clock=ctx.clock).read(token)
    except BadToken:
        raise BadLink(_invalid(ctx)) from None
    with session_scope(ctx.engine) as session:
        subscriber = confirmation.confirmable(session=session, ref=ref)
        if subscriber is None:
            raise BadLink(_invalid(ctx))
        yield ConfirmLink(token=token, ref=ref, subscriber=subscriber, session=session)


ConfirmFromToken = Annotated[ConfirmLink, Depends(confirm_link, scope="function")]


@router.get("/confirm/{token}")
def confirm_page(link: ConfirmFromToken, ctx: WebContext = Depends(get_context)) -> Response:
    # What the button will store, shown first: whoever filled in the form may not be this reader.
    return ctx.page("confirm.html", token_page=True, token=link.token, reader_name=confirmation.confirmed_name(link.ref),
                    categories=[c for c in link.ref.categories.split(";") if c])


@router.post("/confirm/{token}")
def confirm(link: ConfirmFromToken, request: Request, ctx: WebContext = Depends(get_context)) -> Response:
    now = ctx.clock()
    # Day one is the first confirmation of a signup: a reader active already (a second POST, an operator's
    # import) or coming back after leaving is not new, and claim_welcome makes sure of once either way.
    newcomer = link.subscriber.status == SubscriberStatus.pending
    subscriber = confirmation.activate(session=link.session, subscriber=link.subscriber, ref=link.ref, now=now)
    welcome = newcomer and claim_welcome(session=link.session, subscriber_id=subscriber.id, now=now)
    recipient = ctx.signer.recipient_token(subscriber_id=subscriber.id, delivery_id=None, tag=subscriber.link_tag)
    page = ctx.page("confirm_done.html", token_page=True, preferences_url=f"/p/{recipient}", welcome=welcome)
    if welcome:
        # A background task runs after the response is sent, so after the dependency has committed the claim
        # and the activation: the mailer never reads the reader before they are active. A failed commit is
        # a 500 instead of this page, and its task never runs.
        page.background = BackgroundTask(request.app.state.signup_mailer.hand_over,
                                         Welcome(subscriber_id=subscriber.id, now=now))
    return page


def _invalid(ctx: WebContext) -> Response:
    """Like ctx.not_found(): one page for every failure (forged, altered, expired, gone), with a way forward."""
    return ctx.page("confirm_invalid.html", status_code=404, token_page=True)
