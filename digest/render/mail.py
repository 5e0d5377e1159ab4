"""One segment's email and its recipients: the segment rendered once, each recipient's substitutions and
headers, and the `Batch` a transport takes. The send loop, the preview, the dry run, the test send, the
archive and the signup mail all build their emails here, so a rule about what an email carries is written once.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import datetime

from digest.claim.selection import cap
from digest.config import Settings
from digest.links import NAME_HTML_TAG, NAME_TEXT_TAG, TOKEN_TAG, Links
from digest.render.email import Renderer
from digest.render.environment import RenderedEmail
from digest.subscribers.names import clean_name
from digest.transports.base import Batch, Recipient
from digest.votes.results import ReaderResult
from storage.changes import load_changes
from storage.comparisons import load_claimed_comparisons, load_comparisons, load_issue_comparisons


def listed_ids(stored: str) -> list[int]:
    """A segment's ","-joined ids (comparison_ids, change_ids) as a list; "" is none."""
    return [int(part) for part in stored.split(",") if part]


def render_segment(*, session, renderer: Renderer, settings: Settings, week: str, opened_at: datetime,
                   comparison_ids: Sequence[int], audience: str, web: bool = False, issue_id: int | None = None,
                   change_ids: Sequence[int] = (), results: Sequence[ReaderResult] = (),
                   monthly: bool = False) -> RenderedEmail:
    """What every reader of one segment gets: the first `max_shown` of ``comparison_ids`` (ranked) in full,
    the rest as "and K more", then the readers' ``results`` on the previous issue and the verdicts
    ``change_ids`` that changed since they read them; dated by
    when the issue opened (or would open), in the configured zone. With ``issue_id`` the comparisons are
    the versions that issue carried (an update since does not rewrite an issue); without, the current ones.
    ``monthly``: the monthly edition (issue 19), the comparisons as their own weekly issues carried them."""
    shown, more = cap(list(comparison_ids), settings.max_shown)
    if monthly:
        comparisons = load_claimed_comparisons(session=session, ids=shown)
    elif issue_id is None:
        comparisons = load_comparisons(session=session, ids=shown)
    else:
        comparisons = load_issue_comparisons(session=session, issue_id=issue_id, ids=shown)
    return renderer.render_segment(
        week=week,
        issue_date=opened_at.astimezone(settings.tz).date(),
        comparisons=comparisons,
        more_count=more,
        audience=audience,
        web=web,
        changes=load_changes(session=session, ids=change_ids),
        results=results,
        monthly=monthly,
    )


def recipient(delivery_id: int | None, email: str, name: str, token: str, links: Links, settings: Settings) -> Recipient:
    """One recipient's substitutions and headers (headers are never substituted, so they come ready)."""
    name = clean_name(name)
    unsubscribe = f"<{links.unsubscribe(token)}>"
    if settings.unsubscribe_mailto:
        unsubscribe += f", <mailto:{settings.unsubscribe_mailto}?subject=unsubscribe%20{token}>"
    return Recipient(
        delivery_id=delivery_id,
        email=email,
        name=name,
        substitutions={TOKEN_TAG: token, NAME_HTML_TAG: html.escape(name or "there"), NAME_TEXT_TAG: name or "there"},
        headers={"List-Unsubscribe": unsubscribe, "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
    )


def issue_batch(*, settings: Settings, week: str, segment_id: int | None, email: RenderedEmail,
                recipients: list[Recipient], test: bool = False) -> Batch:
    """One request's worth of an issue: the rendered segment and its recipients, with the list headers and tags."""
    custom_args = {"issue": week, "segment": str(segment_id or 0)}
    if test:
        custom_args["test"] = "true"  # webhook events of a test send map to no delivery
    return batch(settings=settings, email=email, recipients=recipients, headers={"List-Id": settings.list_id},
                 categories=["test-send" if test else "weekly-digest", week], custom_args=custom_args)


def batch(*, settings: Settings, email: RenderedEmail, recipients: list[Recipient], categories: list[str],
          custom_args: dict[str, str], headers: dict[str, str] | None = None) -> Batch:
    """An email from us (the configured sender and reply-to) to ``recipients``."""
    return Batch(
        from_email=settings.from_email,
        from_name=settings.from_name,
        reply_to=settings.reply_to,
        subject=email.subject,
        html=email.html,
        text=email.text,
        recipients=recipients,
        headers=headers or {},
        categories=categories,
        custom_args=custom_args,
    )
