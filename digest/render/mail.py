"""One segment's email and its recipients: the segment rendered once, each recipient's substitutions and
headers, and the `Batch` a transport takes. The send loop, the preview, the dry run, the test send, the
archive and the signup mail all build their emails here, so a rule about what an email carries is written once.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from digest.claim.selection import cap
from digest.config import Settings
from digest.links import NAME_HTML_TAG, NAME_TEXT_TAG, TOKEN_TAG, Links
from digest.render.email import Renderer
from digest.render.environment import RenderedEmail
from digest.subscribers.names import clean_name
from digest.transports.base import Batch, Recipient, RecipientRows, TransientError
from digest.votes.results import ReaderResult
from storage.changes import load_changes
from storage.comparisons import load_claimed_comparisons, load_comparisons, load_issue_comparisons

if TYPE_CHECKING:
    from digest.transports.base import Transport

log = logging.getLogger("digest.mail")


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
    return recipients([(delivery_id, None, email, name)], [token], links, settings)[0]


# Every recipient's substitution tags, and the one header of their own (the rest are the same for every one).
RECIPIENT_TAGS = (TOKEN_TAG, NAME_HTML_TAG, NAME_TEXT_TAG)
RECIPIENT_HEADERS = ("List-Unsubscribe",)
ONE_CLICK = {"List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


def recipients(rows: Sequence[tuple], tokens: Sequence[str], links: Links, settings: Settings) -> RecipientRows:
    """A batch's recipients: ``rows`` begin (delivery id, subscriber id, email, name), as a claim reads them
    (storage.deliveries), and ``tokens`` are theirs, in the same order. One tuple per recipient, a million per send:
    what is the same for all of them is worked out once."""
    unsubscribe = links.unsubscribe("")
    mailto = f"mailto:{settings.unsubscribe_mailto}?subject=unsubscribe%20" if settings.unsubscribe_mailto else None
    escape, people = html.escape, []
    for row, token in zip(rows, tokens):
        name = clean_name(row[3])
        greeting = name or "there"
        header = f"<{unsubscribe}{token}>, <{mailto}{token}>" if mailto else f"<{unsubscribe}{token}>"
        people.append((row[0], row[2], name, token, escape(greeting), greeting, header))
    return RecipientRows(people, substitutions=RECIPIENT_TAGS, headers=RECIPIENT_HEADERS, fixed_headers=ONE_CLICK)


def issue_batch(*, settings: Settings, week: str, segment_id: int | None, email: RenderedEmail,
                recipients: Sequence[Recipient], test: bool = False) -> Batch:
    """One request's worth of an issue: the rendered segment and its recipients, with the list headers and tags."""
    custom_args = {"issue": week, "segment": str(segment_id or 0)}
    if test:
        custom_args["test"] = "true"  # webhook events of a test send map to no delivery
    return batch(settings=settings, email=email, recipients=recipients, headers={"List-Id": settings.list_id},
                 categories=["test-send" if test else "weekly-digest", week], custom_args=custom_args)


def batch(*, settings: Settings, email: RenderedEmail, recipients: Sequence[Recipient], categories: list[str],
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


LETTER_ATTEMPTS = 3  # a one-off email (the confirmation, the welcome, the re-permission letters): again after 1 s, 2 s


def send_letter(transport: Transport, batch: Batch, *, what: str, sleep: Callable[[float], None]) -> str | None:
    """Hand a one-off email (the confirmation, the welcome, the re-permission letters; not an issue's batch, which
    the send loop owns) to the transport, trying a transient failure again; None when it was taken, else why not,
    in words (logged, with ``what`` it was)."""
    for attempt in range(1, LETTER_ATTEMPTS + 1):
        try:
            transport.send(batch)
            return None
        except TransientError as exc:
            log.warning("%s: attempt %d of %d failed: %s", what, attempt, LETTER_ATTEMPTS, exc)
            if attempt == LETTER_ATTEMPTS:
                return f"the provider failed {LETTER_ATTEMPTS} times: {exc}"
            sleep(2.0 ** (attempt - 1))
        except Exception as exc:  # noqa: BLE001 — a refusal (PermanentError, unsafe links) or a bug: logged
            log.exception("%s refused", what)
            return f"the provider refused it: {exc}"
    return None
