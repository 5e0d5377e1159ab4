"""What an issue will look like and who gets what, before anything is sent. Read-only."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select

from digest.render.environment import RenderedEmail
from digest.claim.selection import ComparisonFacts, audience_label, cap, rank, visible_to
from digest.send.loop import Sender, recipient
from digest.transports.base import Recipient, fill
from digest.weekly import BadWeek, IssuePlan, iso_week, parse_week, plan_issue
from storage.comparisons import claimable_comparisons, claimed_comparisons, load_comparisons
from storage.issues import find_issue
from storage.db import session_scope
from storage.left_out import PAUSED, LeftOut, SentIssue, left_out, sent_issue
from storage.models import Issue, Subscriber

HTML_BUDGET = 90 * 1024  # Gmail clips messages over ~102 KB; 90 KB leaves room for its own additions


class NothingToPreview(Exception):
    pass


@dataclass(frozen=True)
class Preview:
    week: str
    reader: str  # who it is rendered for, in words
    email: RenderedEmail  # with the reader's substitutions filled in
    exists: bool  # the issue is already opened (else: what opening it now would claim)
    showing: str = ""  # when the issue does not exist: what is shown instead, in words


def _issue_and_ranked(session, *, week: str, now: datetime) -> tuple[Issue | None, list[ComparisonFacts]]:
    issue = find_issue(session=session, week=week)
    if issue is not None:
        return issue, rank(claimed_comparisons(session=session, issue_id=issue.id))
    return None, rank(claimable_comparisons(session=session, now=now))


def _week(week: str | None, *, now: datetime, tz) -> str:
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


def render_for(*, sender: Sender, week: str | None, now: datetime, as_email: str | None) -> Rendered:
    """The issue of ``week`` (default: this week's) as ``as_email`` gets it — or a sample reader of every category."""
    settings = sender.settings
    week = _week(week, now=now, tz=settings.tz)
    with session_scope(sender.engine) as session:
        issue, ranked = _issue_and_ranked(session, week=week, now=now)
        if not ranked:
            raise NothingToPreview(f"issue {week} has no comparison: nothing published since the last issue")
        subscriber, delivery_id = _reader(session, as_email, issue)
        categories = subscriber.categories if subscriber else ""
        visible = visible_to(ranked, categories)
        if not visible:
            raise NothingToPreview(f"{as_email} follows categories with nothing in issue {week}: they get no email")
        shown, more = cap([c.id for c in visible], settings.max_shown)
        email = sender.renderer.render_segment(
            week=week,
            issue_date=(issue.created_at if issue else now).astimezone(settings.tz).date(),
            comparisons=load_comparisons(session=session, ids=shown),
            more_count=more,
            audience=audience_label(ranked, categories),
        )
    # Id 0: no such subscriber, so the sample reader's links change nothing.
    token = sender.signer.recipient_token(subscriber_id=subscriber.id if subscriber else 0, delivery_id=delivery_id,
                                          tag=subscriber.link_tag if subscriber else 0)
    name = subscriber.name if subscriber else "Sample Reader"
    address = subscriber.email if subscriber else "sample.reader@example.com"
    person = recipient(delivery_id, address, name, token, sender.links, settings)
    return Rendered(week=week, reader=f"{address} ({audience_label(ranked, categories)})", email=email,
                    person=person, exists=issue is not None,
                    showing="" if issue else _showing(week, this_week=iso_week(now.astimezone(settings.tz)),
                                                      claimable=len(ranked)))


def _showing(week: str, *, this_week: str, claimable: int) -> str:
    """What a preview of a week with no issue shows: not that week's content, which does not exist yet."""
    what = f"{claimable} comparison{'s' if claimable != 1 else ''} published and in no issue"
    if week < this_week:  # labels sort as weeks do: "2026-W09" < "2026-W10"
        return f"no issue was opened for {week}: showing what an issue opened now would claim ({what})"
    return f"no issue for {week} yet: showing what it would claim now ({what})"


def preview(*, sender: Sender, week: str | None, now: datetime, as_email: str | None) -> Preview:
    """`render_for` with the reader's substitutions filled in: exactly what they would see."""
    rendered = render_for(sender=sender, week=week, now=now, as_email=as_email)
    subs = rendered.person.substitutions
    filled = RenderedEmail(subject=fill(rendered.email.subject, subs), html=fill(rendered.email.html, subs),
                           text=fill(rendered.email.text, subs), mjml=fill(rendered.email.mjml, subs))
    return Preview(week=rendered.week, reader=rendered.reader, email=filled, exists=rendered.exists,
                   showing=rendered.showing)


def as_eml(*, sender: Sender, rendered: Rendered) -> bytes:
    """The whole multipart/alternative message with its headers, as the reader's inbox would get it."""
    from digest.transports.outbox import message_for

    batch = sender.batch(week=rendered.week, segment_id=None, email=rendered.email, recipients=[rendered.person])
    return message_for(batch, rendered.person).as_bytes()


def test_send(*, sender: Sender, rendered: Rendered, addresses: list[str]) -> int:
    """Send the rendered issue to ``addresses`` only, marked as a test: no delivery, stats or claim is touched.

    Each address gets a token for no subscriber (id 0), so its links lead nowhere and record nothing.
    """
    token = sender.signer.recipient_token(subscriber_id=0, delivery_id=None, tag=0)
    people = [recipient(None, address, "", token, sender.links, sender.settings) for address in addresses]
    email = RenderedEmail(subject=f"[TEST] {rendered.email.subject}", html=rendered.email.html,
                          text=rendered.email.text, mjml=rendered.email.mjml)
    batch = sender.batch(week=rendered.week, segment_id=None, email=email, recipients=people, test=True)
    sender.transport.send(batch)
    return len(people)


def _reader(session, as_email: str | None, issue: Issue | None):
    if as_email is None:
        return None, None
    subscriber = session.execute(select(Subscriber).where(Subscriber.email_key == as_email.strip().lower())).scalars().first()
    if subscriber is None:
        raise NothingToPreview(f"no subscriber with the address {as_email}")
    delivery_id = None
    if issue is not None:
        from storage.models import Delivery

        delivery_id = session.execute(
            select(Delivery.id).where(Delivery.issue_id == issue.id, Delivery.subscriber_id == subscriber.id)
        ).scalars().first()
    return subscriber, delivery_id


@dataclass(frozen=True)
class SegmentSummary:
    audience: str
    recipients: int
    titles: list[str]  # in rank order, all the segment sees
    shown: int
    subject: str
    html_bytes: int


LISTED = 50  # people named in the dry run's "get nothing" list; --json names them all


@dataclass(frozen=True)
class DryRun:
    week: str
    exists: bool
    titles: list[str]
    segments: list[SegmentSummary]
    nothing: dict[str, int]  # who gets nothing, by reason (storage.left_out.REASONS)
    left_out: list[LeftOut] = field(default_factory=list)  # the first of them, by reason then address
    sent: SentIssue | None = None  # the issue already went out: nothing else is filled in

    def as_dict(self, *, tz) -> dict:
        """For `digest send --dry-run --json`: plain JSON-ready data."""
        if self.sent:
            sent = self.sent
            return {"week": self.week, "already_sent": {
                "first_sent_at": _iso(sent.first_sent_at), "closed_at": _iso(sent.closed_at),
                "readers": sent.readers, "still_to_send": sent.to_send}}
        return {
            "week": self.week, "exists": self.exists, "comparisons": self.titles,
            "segments": [vars(segment) for segment in self.segments],
            "recipients": sum(segment.recipients for segment in self.segments),
            "get_nothing": {"counts": self.nothing,
                            "people": [{"email": person.email, "reason": reason_text(person, tz=tz)}
                                       for person in self.left_out]},
        }


def reason_text(person: LeftOut, *, tz) -> str:
    """Why ``person`` gets nothing, in words: "unsubscribed", "paused until 2026-12-14"."""
    if person.reason == PAUSED and person.paused_until is not None:
        return f"paused until {person.paused_until.astimezone(tz).date().isoformat()}"
    return person.reason


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def dry_run(*, sender: Sender, week: str | None, now: datetime, limit: int | None = LISTED) -> DryRun:
    """Who would get what if the issue were sent now, and who gets nothing and why (the first ``limit``
    people, all with None). An issue that already went out, in part or in full, is only described."""
    settings = sender.settings
    week = _week(week, now=now, tz=settings.tz)
    with session_scope(sender.engine) as session:
        issue, ranked = _issue_and_ranked(session, week=week, now=now)
        sent = sent_issue(session=session, issue=issue) if issue is not None else None
        if sent is not None:
            return DryRun(week=week, exists=True, titles=[], segments=[], nothing={}, sent=sent)
        plan: IssuePlan = plan_issue(session=session, now=now, ranked=ranked)
        titles_by_id = _titles(session, [c.id for c in ranked])
        summaries = []
        for segment in plan.segments:
            shown, more = cap(segment.comparison_ids, settings.max_shown)
            email = sender.renderer.render_segment(
                week=week, issue_date=(issue.created_at if issue else now).astimezone(settings.tz).date(),
                comparisons=load_comparisons(session=session, ids=shown), more_count=more,
                audience=segment.audience,
            )
            summaries.append(SegmentSummary(
                audience=segment.audience, recipients=plan.size(segment),
                titles=[titles_by_id[i] for i in segment.comparison_ids], shown=len(shown),
                subject=email.subject, html_bytes=len(email.html.encode()),
            ))
        reached = sorted({categories for segment in plan.segments for categories in segment.category_sets})
        nothing, people = left_out(session=session, now=now, reached=reached if ranked else None, limit=limit)
    return DryRun(week=week, exists=issue is not None, titles=[titles_by_id[c.id] for c in ranked],
                  segments=summaries, nothing=nothing, left_out=people)


def _titles(session, ids: list[int]) -> dict[int, str]:
    from storage.models import Comparison

    if not ids:
        return {}
    return dict(session.execute(select(Comparison.id, Comparison.title).where(Comparison.id.in_(ids))).all())
