"""What an issue will look like and who gets what, before anything is sent. Read-only."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from digest.render.environment import RenderedEmail
from digest.claim.selection import ComparisonFacts, audience_label, rank, visible_to
from digest.render import mail
from digest.services import Services
from digest.transports.base import Recipient, fill
from digest.claim.weeks import BadWeek, iso_week, parse_week
from storage.audience import delivery_id_for
from digest.votes.results import ReaderResult, from_json, reader_results
from storage.changes import change_ids_for
from storage.reader_results import got_issue, previous_issue, votes_on_issue
from storage.subscribers import find_by_email_key
from storage.comparisons import claimable_comparisons, claimed_comparisons
from storage.issues import find_issue
from storage.db import session_scope
from storage.models import Issue, Subscriber

class NothingToPreview(Exception):
    pass


@dataclass(frozen=True)
class Preview:
    week: str
    reader: str  # who it is rendered for, in words
    email: RenderedEmail  # with the reader's substitutions filled in
    exists: bool  # the issue is already opened (else: what opening it now would claim)
    showing: str = ""  # when the issue does not exist: what is shown instead, in words


def issue_and_ranked(session, *, week: str, now: datetime) -> tuple[Issue | None, list[ComparisonFacts]]:
    issue = find_issue(session=session, week=week)
    if issue is not None:
        return issue, rank(claimed_comparisons(session=session, issue_id=issue.id))
    return None, rank(claimable_comparisons(session=session, now=now))


def week_asked(week: str | None, *, now: datetime, tz) -> str:
    """The week asked for (default: this week) as the store names it: the editor's picker takes "2026-w9"
    as the CLI does; NothingToPreview says what to write for something that is no week."""
    today = now.astimezone(tz).date()
    if not week:
        return iso_week(today)
    try:
        return parse_week(week, today=today)
    except BadWeek as exc:
        raise NothingToPreview(str(exc)) from None


@dataclass(frozen=True)
class Rendered:
    """An issue rendered for one reader, per-recipient values still tags, and that reader's values."""

    week: str
    reader: str  # who it is rendered for, in words
    email: RenderedEmail  # substitution tags not filled
    person: Recipient  # the reader's substitutions and headers
    exists: bool  # the issue is already opened (else: what opening it now would claim)
    showing: str = ""  # when the issue does not exist: what is shown instead, in words


def render_for(*, services: Services, week: str | None, now: datetime, as_email: str | None) -> Rendered:
    """The issue of ``week`` (default: this week's) as ``as_email`` gets it — or a sample reader of every category,
    who sees every verdict change the issue carries (or would)."""
    settings = services.settings
    week = week_asked(week, now=now, tz=settings.tz)
    with session_scope(services.engine) as session:
        issue, ranked = issue_and_ranked(session, week=week, now=now)
        if not ranked:
            raise NothingToPreview(f"issue {week} has no comparison: nothing published since the last issue")
        subscriber, delivery_id = _reader(session, as_email, issue)
        categories = subscriber.categories if subscriber else ""
        visible = visible_to(ranked, categories)
        if not visible:
            raise NothingToPreview(f"{as_email} follows categories with nothing in issue {week}: they get no email")
        changes = change_ids_for(session=session, issue_id=issue.id if issue else None,
                                 subscriber_id=subscriber.id if subscriber else None)
        results = _results_for(session, issue=issue, week=week, subscriber=subscriber)
        email = mail.render_segment(session=session, renderer=services.renderer, settings=settings, week=week,
                                    opened_at=issue.created_at if issue else now,
                                    comparison_ids=[c.id for c in visible], audience=audience_label(ranked, categories),
                                    issue_id=issue.id if issue else None, change_ids=changes, results=results)
    # Id 0: no such subscriber, so the sample reader's links change nothing.
    token = services.signer.recipient_token(subscriber_id=subscriber.id if subscriber else 0, delivery_id=delivery_id,
                                          tag=subscriber.link_tag if subscriber else 0)
    name = subscriber.name if subscriber else "Sample Reader"
    address = subscriber.email if subscriber else "sample.reader@example.com"
    person = mail.recipient(delivery_id, address, name, token, services.links, settings)
    return Rendered(week=week, reader=f"{address} ({audience_label(ranked, categories)})", email=email,
                    person=person, exists=issue is not None,
                    showing="" if issue else _showing(week, this_week=iso_week(now.astimezone(settings.tz)),
                                                      claimable=len(ranked)))


def _results_for(session, *, issue: Issue | None, week: str, subscriber: Subscriber | None) -> list[ReaderResult]:
    """The readers' results on the previous issue this reader gets (issue 17): fixed in the issue once it is
    open, figured now before; only for a reader who got that issue (the sample reader gets them)."""
    previous = previous_issue(session=session, week=week)
    if previous is None:
        return []
    got = subscriber is None or got_issue(session=session, issue_id=previous.id, subscriber_id=subscriber.id)
    if not got:
        return []
    if issue is not None:
        return from_json(issue.reader_results)
    return reader_results(votes_on_issue(session=session, issue_id=previous.id))


def _showing(week: str, *, this_week: str, claimable: int) -> str:
    """What a preview of a week with no issue shows: not that week's content, which does not exist yet."""
    what = f"{claimable} comparison{'s' if claimable != 1 else ''} published and in no issue"
    if week < this_week:  # labels sort as weeks do: "2026-W09" < "2026-W10"
        return f"no issue was opened for {week}: showing what an issue opened now would claim ({what})"
    return f"no issue for {week} yet: showing what it would claim now ({what})"


def preview(*, services: Services, week: str | None, now: datetime, as_email: str | None) -> Preview:
    """`render_for` with the reader's substitutions filled in: exactly what they would see."""
    rendered = render_for(services=services, week=week, now=now, as_email=as_email)
    subs = rendered.person.substitutions
    filled = RenderedEmail(subject=fill(rendered.email.subject, subs), html=fill(rendered.email.html, subs),
                           text=fill(rendered.email.text, subs), mjml=fill(rendered.email.mjml, subs))
    return Preview(week=rendered.week, reader=rendered.reader, email=filled, exists=rendered.exists,
                   showing=rendered.showing)


def as_eml(*, services: Services, rendered: Rendered) -> bytes:
    """The whole multipart/alternative message with its headers, as the reader's inbox would get it."""
    from digest.transports.outbox import message_for

    batch = mail.issue_batch(settings=services.settings, week=rendered.week, segment_id=None, email=rendered.email,
                             recipients=[rendered.person])
    return message_for(batch, rendered.person).as_bytes()


def test_send(*, services: Services, rendered: Rendered, addresses: list[str]) -> int:
    """Send the rendered issue to ``addresses`` only, marked as a test: no delivery, stats or claim is touched.

    Each address gets a token for no subscriber (id 0), so its links lead nowhere and record nothing.
    """
    token = services.signer.recipient_token(subscriber_id=0, delivery_id=None, tag=0)
    people = [mail.recipient(None, address, "", token, services.links, services.settings) for address in addresses]
    email = RenderedEmail(subject=f"[TEST] {rendered.email.subject}", html=rendered.email.html,
                          text=rendered.email.text, mjml=rendered.email.mjml)
    batch = mail.issue_batch(settings=services.settings, week=rendered.week, segment_id=None, email=email,
                             recipients=people, test=True)
    services.transport.send(batch)
    return len(people)


def _reader(session, as_email: str | None, issue: Issue | None) -> tuple[Subscriber | None, int | None]:
    """The subscriber ``as_email`` names and their delivery of ``issue`` (None before it is fanned out to them)."""
    if as_email is None:
        return None, None
    subscriber = find_by_email_key(session=session, email_key=as_email.strip().lower())
    if subscriber is None:
        raise NothingToPreview(f"no subscriber with the address {as_email}")
    if issue is None:
        return subscriber, None
    return subscriber, delivery_id_for(session=session, issue_id=issue.id, subscriber_id=subscriber.id)
