"""The readers' vote pages (`/v/{token}/{slug}/{tool}/{choice}`, issue 17): ship or skip a tool from the email.

Mail scanners GET (and HEAD) every link of every email, some of them minutes after delivery, so a GET
never records anything: it shows the tool, the link's choice preselected, the reader's standing vote and
the readers' tally, and one "Cast my vote" button. Only that form's POST (with the CSRF field) votes, then
answers 303 to the page with ``?done=1`` (Post/Redirect/Get: a reload does not vote again).

A token naming nobody, or a path naming no ballot (unknown or never-sent comparison, tool out of range,
another choice), gets the one bad-link answer of every token page, on GET and POST, before anything else.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from digest.links import RecipientRef
from digest.votes.casting import Ballot, ballot, cast_vote, current_choice, readers_tally, why_not
from digest.votes.voters import CHOICES
from digest.web.context import WebContext, get_context
from digest.web.subscriber_common import (
    BadLink, LinkRoute, SubscriberFromToken, SubscriberLink, csrf_refused, csrf_valid, see_other,
)
from storage.votes import Reader, reader

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
async def vote_post(
    token: str,
    slug: str,
    tool: str,
    choice: str,
    request: Request,
    chosen: Annotated[str, Form(alias="vote")] = "",
    csrf: Annotated[str | None, Form()] = None,
    ctx: WebContext = Depends(get_context),
) -> Response:
    """Cast the choice the form's radio buttons say (the link's choice only preselected one).

    The answers, in order: the bad-link page (token or path names nothing), 403 (CSRF), 409 (the reader may
    not vote), 400 (no choice), else 303 once the vote is committed. The checks and the vote are one short
    transaction on the driver's cursor (`_cast`), on the process's writing thread; only the rare refusals
    render a page."""
    ref = ctx.recipient(token)
    if ref is None:
        return ctx.not_found()
    csrf_passed = csrf_valid(ctx, request, csrf)
    now = ctx.clock()
    outcome, reader, asked = await ctx.write(_cast, ctx, ref, (slug, tool, choice), chosen, csrf_passed, now)
    if outcome == "bad link":
        return ctx.not_found()
    if outcome == "refused":
        return csrf_refused(ctx)
    path = f"/v/{token}/{quote(asked.comparison.slug, safe='')}/{asked.position + 1}/"
    if outcome == "closed":
        # 409: the request is understood but the reader's subscription forbids it; the page says why in
        # words, as the GET does, so a browser shows the same page and a script can tell nothing was cast.
        return await run_in_threadpool(_refusal, ctx, request, token, reader, asked, path, 409, "")
    if outcome == "no choice":  # no radio ticked, or a forged value: nothing is cast
        return await run_in_threadpool(_refusal, ctx, request, token, reader, asked, path, 400,
                                       "Choose Ship or Skip, then Cast my vote.")
    # The page of the choice cast, so its radio buttons show the vote; the vote committed before this leaves.
    return see_other(f"{path}{chosen}?done=1")


def _cast(ctx: WebContext, ref: RecipientRef, link: tuple[str, str, str], chosen: str, csrf_passed: bool,
          now: datetime) -> tuple[str, Reader | None, Ballot | None]:
    """In one transaction: the reader and the ballot the link names, then (CSRF passed, the reader may vote,
    a choice made) the vote: ("bad link" | "refused" | "closed" | "no choice" | "cast", reader, ballot)."""
    slug, tool, choice = link
    with ctx.engine.begin() as connection:
        found = reader(session=connection, subscriber_id=ref.subscriber_id, delivery_id=ref.delivery_id)
        if found is None or not _named_by(ref, found):
            return "bad link", None, None
        asked = ballot(session=connection, slug=slug, tool=tool, choice=choice)
        if asked is None:
            return "bad link", None, None
        if not csrf_passed:
            return "refused", found, asked
        if why_not(found, now=now) is not None:
            return "closed", found, asked
        if chosen not in CHOICES:
            return "no choice", found, asked
        cast_vote(session=connection, secret_key=ctx.settings.secret_key, subscriber=found, issue_id=found.issue_id,
                  ballot=replace(asked, choice=chosen), now=now)
        return "cast", found, asked


def _named_by(ref: RecipientRef, found: Reader) -> bool:
    """As `subscriber_for`: the token fits the row, and a token from before tags that names a delivery
    names one of this reader's."""
    if not ref.fits(link_tag=found.link_tag, accepts_untagged_links=found.accepts_untagged_links):
        return False
    return not (ref.tag is None and ref.delivery_id is not None and found.issue_id is None)


def _refusal(ctx: WebContext, request: Request, token: str, found: Reader, asked: Ballot, path: str,
             status_code: int, error: str) -> Response:
    with ctx.engine.connect().execution_options(read_only=True) as connection, connection.begin():
        return _page(ctx, request, connection, token=token, subscriber=found, ballot=asked, path=path,
                     status_code=status_code, error=error)


def _render(ctx: WebContext, request: Request, vote: VoteLink, *, status_code: int = 200, done: bool = False,
            error: str = "") -> Response:
    link, asked = vote.link, vote.ballot
    return _page(ctx, request, link.session, token=link.token, subscriber=link.subscriber, ballot=asked,
                 path=vote.path(""), status_code=status_code, done=done, error=error)


def _page(ctx: WebContext, request: Request, session, *, token: str, subscriber, ballot: Ballot, path: str,
          status_code: int = 200, done: bool = False, error: str = "") -> Response:
    """The vote page: the ballot, the reader's standing vote and the readers' tally, read in ``session``."""
    ship, skip = readers_tally(session=session, ballot=ballot)
    return ctx.form_page(
        request, "vote.html", status_code=status_code,
        token=token, action=path + ballot.choice, comparison=ballot.comparison, tool=ballot.tool,
        preselected=ballot.choice, current=current_choice(session=session, subscriber=subscriber, ballot=ballot),
        ship=ship, skip=skip, closed=why_not(subscriber, now=ctx.clock()), done=done, error=error,
    )
