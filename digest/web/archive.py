"""Past issues on the web: `GET /archive` lists them, `GET /archive/{week}` shows one as the web version of
the email (its "View in your browser" link), rendered for "all categories" with nothing per recipient.

Only issues that were fanned out are shown: an issue is public once it went out. The page is the email's
own MJML-rendered HTML, so it needs inline styles, which the site-wide CSP forbids; it gets a policy of
its own that allows them and still allows no script, no framing and no foreign form target.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, Response

from digest.render.email import Renderer, issue_label
from digest.render.mail import render_segment
from digest.web.context import WebContext, get_context
from storage.db import session_scope
from digest.votes.results import from_json
from storage.changes import carried_change_ids
from storage.issues import PublishedIssue, find_issue, published_issues, ranked_comparison_ids

router = APIRouter()

WEEK = re.compile(r"\d{4}-W\d{2}")
ARCHIVE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; script-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# Past issues do not change; five minutes keeps a shared link cheap without hiding a fix for long.
CACHE = {"Cache-Control": "public, max-age=300"}


@dataclass(frozen=True)
class PastIssue:
    week: str
    label: str  # "Week 48 · 26 November 2026"
    published: date
    titles: tuple[str, ...]  # in rank order


@router.get("/archive")
def archive_index(ctx: WebContext = Depends(get_context)) -> Response:
    with session_scope(ctx.engine) as session:
        issues = [_past_issue(issue, ctx) for issue in published_issues(session=session)]
    page = ctx.page("archive.html", issues=issues)
    page.headers.update(CACHE)
    return page


@router.get("/archive/{week}")
def archive_issue(week: str, ctx: WebContext = Depends(get_context)) -> Response:
    if not WEEK.fullmatch(week):
        return ctx.not_found()
    with session_scope(ctx.engine) as session:
        issue = find_issue(session=session, week=week)
        if issue is None or issue.fanned_out_at is None:
            return ctx.not_found()
        ranked = ranked_comparison_ids(session=session, issue_id=issue.id)
        if not ranked:
            return ctx.not_found()
        # Capped to max_shown with "and K more", dated by the issue's opening: as the email shows it.
        # Renderer's default is the one email environment of the process (email_environment()).
        # The versions the issue carried, and every verdict change and readers' result it carried (to some of
        # its readers).
        email = render_segment(session=session, renderer=Renderer(settings=ctx.settings, links=ctx.links),
                               settings=ctx.settings, week=issue.week, opened_at=issue.created_at,
                               comparison_ids=ranked, audience="all categories", web=True, issue_id=issue.id,
                               change_ids=carried_change_ids(session=session, issue_id=issue.id),
                               results=from_json(issue.reader_results))
    return HTMLResponse(email.html, headers={"Content-Security-Policy": ARCHIVE_CSP, **CACHE})


def _past_issue(issue: PublishedIssue, ctx: WebContext) -> PastIssue:
    """The issue as the index lists it, dated as the email shows it (render.mail.render_segment): its opening,
    in the configured zone."""
    published = issue.opened_at.astimezone(ctx.settings.tz).date()
    return PastIssue(week=issue.week, label=issue_label(issue.week, published), published=published,
                     titles=issue.titles)
