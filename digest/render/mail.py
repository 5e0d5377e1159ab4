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
from storage.comparisons import load_comparisons
from storage.records import VerdictChangeRecord


def render_segment(*, session, renderer: Renderer, settings: Settings, week: str, opened_at: datetime,
                   comparison_ids: Sequence[int], audience: str, web: bool = False,
                   changes: Sequence[VerdictChangeRecord] = ()) -> RenderedEmail:
    """What every reader of one segment gets: the first `max_shown` of ``comparison_ids`` (ranked) in full,
    the rest as "and K more"; dated by when the issue opened (or would open), in the configured zone."""
    shown, more = cap(list(comparison_ids), settings.max_shown)
    return renderer.render_segment(
        week=week,
        issue_date=opened_at.astimezone(settings.tz).date(),
        comparisons=load_comparisons(session=session, ids=shown),
        more_count=more,
        audience=audience,
        web=web,
        changes=changes,
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
