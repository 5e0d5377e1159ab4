"""The readers' vote pages (`/v/{token}/{slug}/{tool}/{choice}`, issue 17): ship or skip a tool from the email.

Mail scanners GET (and HEAD) every link of every email, some of them minutes after delivery, so a GET
never records anything: it shows the tool, the link's choice preselected, the reader's standing vote and
the readers' tally, and one "Cast my vote" button. Only that form's POST (with the CSRF field) votes, then
answers 303 to the page with ``?done=1`` (Post/Redirect/Get: a reload does not vote again).

A token naming nobody, or a path naming no ballot (unknown or never-sent comparison, tool out of range,
another choice), gets the one bad-link answer of every token page, on GET and POST, before anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response

from digest.votes.casting import Ballot, ballot, cast_vote, current_choice, readers_tally, why_not
from digest.web.context import WebContext, get_context
from digest.web.subscriber_common import (
    BadLink, LinkRoute, SubscriberFromToken, SubscriberLink, csrf_refused, csrf_valid, delivery_of, see_other,
)

router = APIRouter(route_class=LinkRoute)

VOTE_PATH = "/v/{token}/{slug}/{tool}/{choice}"


@dataclass(frozen=True)
class VoteLink:
    """A vote link that names a reader and a ballot: what the page shows and the POST casts."""

    link: SubscriberLink
    ballot: Ballot

    def path(self, choice: str) -> str:
        """This link's page for ``choice``, spelled as Links.vote spells it (a tool "01" becomes 1)."""
        slug = quote(self.ballot.comparison.slug, safe="")
        return f"/v/{self.link.token}/{slug}/{self.ballot.position + 1}/{choice}"


def vote_link(link: SubscriberFromToken, slug: str, tool: str, choice: str,
              ctx: WebContext = Depends(get_context)) -> VoteLink:
    """FastAPI dependency (use `VoteFromLink`): the reader and the ballot, or BadLink(not found) — the very
    answer a bad token gets, so a probe cannot tell a foreign token from an unknown slug."""
    asked = ballot(session=link.session, slug=slug, tool=tool, choice=choice)
    if asked is None:
        raise BadLink(ctx.not_found())
    return VoteLink(link=link, ballot=asked)


# scope="function": the reader's transaction (SubscriberFromToken) is still open while the route runs.
VoteFromLink = Annotated[VoteLink, Depends(vote_link, scope="function")]


@router.get(VOTE_PATH)
def vote_page(vote: VoteFromLink, request: Request, done: str = "",
              ctx: WebContext = Depends(get_context)) -> Response:
    """The page behind a Ship/Skip link in the email: nothing is recorded by looking (HEAD runs this too)."""
    return _render(ctx, request, vote, done=bool(done))


@router.post(VOTE_PATH)
def vote_post(
    vote: VoteFromLink,
    request: Request,
    chosen: Annotated[str, Form(alias="vote")] = "",
    csrf: Annotated[str | None, Form()] = None,
    ctx: WebContext = Depends(get_context),
) -> Response:
    """Cast the choice the form's radio buttons say (the link's choice only preselected one)."""
    if not csrf_valid(ctx, request, csrf):
        return csrf_refused(ctx)
    link = vote.link
    now = ctx.clock()
    if why_not(link.subscriber, now=now) is not None:
        # 409: the request is understood but the reader's subscription forbids it; the page says why in
        # words, as the GET does, so a browser shows the same page and a script can tell nothing was cast.
        return _render(ctx, request, vote, status_code=409)
    asked = ballot(session=link.session, slug=vote.ballot.comparison.slug, tool=str(vote.ballot.position + 1),
                   choice=chosen)
    if asked is None:  # no radio ticked, or a forged value: nothing is cast
        return _render(ctx, request, vote, status_code=400, error="Choose Ship or Skip, then Cast my vote.")
    delivery = delivery_of(link.session, link.subscriber, link.ref)
    cast_vote(session=link.session, secret_key=ctx.settings.secret_key, subscriber=link.subscriber,
              issue_id=delivery.issue_id if delivery else None, ballot=asked, now=now)
    # The page of the choice cast, so its radio buttons show the vote; the vote commits before this leaves.
    return see_other(f"{vote.path(asked.choice)}?done=1")


def _render(ctx: WebContext, request: Request, vote: VoteLink, *, status_code: int = 200, done: bool = False,
            error: str = "") -> Response:
    link, asked = vote.link, vote.ballot
    ship, skip = readers_tally(session=link.session, ballot=asked)
    return ctx.form_page(
        request, "vote.html", status_code=status_code,
        token=link.token, action=vote.path(asked.choice), comparison=asked.comparison, tool=asked.tool,
        preselected=asked.choice, current=current_choice(session=link.session, subscriber=link.subscriber,
                                                         ballot=asked),
        ship=ship, skip=skip, closed=why_not(link.subscriber, now=ctx.clock()), done=done, error=error,
    )
