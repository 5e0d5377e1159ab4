"""Past issues on the web: `GET /archive` lists them, `GET /archive/{week}` shows one as the web version of
the email (its "View in your browser" link), rendered for "all categories" with nothing per recipient.

Only issues that were fanned out are shown: an issue is public once it went out. The page is the email's
own MJML-rendered HTML, so it needs inline styles, which the site-wide CSP forbids; it gets a policy of
its own that allows them and still allows no script, no framing and no foreign form target.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache

from fastapi import APIRouter, Depends
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlmodel import Session

from digest.render.email import Renderer, issue_label
from digest.render.environment import make_environment
from digest.claim.selection import cap
from digest.web.context import WebContext, get_context
from storage.comparisons import load_comparisons
from storage.issues import find_issue
from storage.db import session_scope
from storage.models import Comparison, Issue, IssueComparison

router = APIRouter()

WEEK = re.compile(r"\d{4}-W\d{2}")
ARCHIVE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; script-src 'none'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# Past issues do not change; five minutes keeps a shared link cheap without hiding a fix for long.
CACHE = {"Cache-Control": "public, max-age=300"}


@dataclass
class PastIssue:
    week: str
    label: str  # "Week 48 · 26 November 2026"
    published: date
    titles: list[str] = field(default_factory=list)  # in rank order


@router.get("/archive")
def archive_index(ctx: WebContext = Depends(get_context)) -> Response:
    with session_scope(ctx.engine) as session:
        issues = _past_issues(session, ctx)
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
        shown, more = cap(_ranked_ids(session, issue.id), ctx.settings.max_shown)  # as many as the email shows
        comparisons = load_comparisons(session=session, ids=shown)
        if not comparisons:
            return ctx.not_found()
        renderer = Renderer(settings=ctx.settings, links=ctx.links, env=_email_environment())
        email = renderer.render_segment(week=issue.week, issue_date=_published(issue, ctx), comparisons=comparisons,
                                        more_count=more, audience="all categories", web=True)
    return HTMLResponse(email.html, headers={"Content-Security-Policy": ARCHIVE_CSP, **CACHE})


def _past_issues(session: Session, ctx: WebContext) -> list[PastIssue]:
    """Fanned-out issues, newest first, each with its comparisons' titles in rank order."""
    issues = session.execute(
        select(Issue).where(Issue.fanned_out_at.is_not(None)).order_by(Issue.week.desc())
    ).scalars().all()
    past = {issue.id: PastIssue(week=issue.week, label=issue_label(issue.week, _published(issue, ctx)),
                                published=_published(issue, ctx)) for issue in issues}
    if past:
        rows = session.execute(
            select(IssueComparison.issue_id, Comparison.title)
            .join(Comparison, Comparison.id == IssueComparison.comparison_id)
            .where(IssueComparison.issue_id.in_(list(past)))
            .order_by(IssueComparison.issue_id, IssueComparison.rank, IssueComparison.id)
        )
        for issue_id, title in rows:
            past[issue_id].titles.append(title)
    return list(past.values())


def _ranked_ids(session: Session, issue_id: int) -> list[int]:
    return list(session.execute(
        select(IssueComparison.comparison_id).where(IssueComparison.issue_id == issue_id)
        .order_by(IssueComparison.rank, IssueComparison.id)
    ).scalars())


def _published(issue: Issue, ctx: WebContext) -> date:
    """The issue's date as the email shows it (send.render_segment): its opening, in the configured zone."""
    return issue.created_at.astimezone(ctx.settings.tz).date()


@lru_cache(maxsize=1)
def _email_environment():
    return make_environment()
