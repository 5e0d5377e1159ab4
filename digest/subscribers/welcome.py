"""The welcome on day one (issue 19, item 3): a reader who confirms a signup gets one email saying what to
expect (when it arrives, how often, how much, how to change it), the latest issue's three clearest verdicts,
and the link to their preferences.

Once per subscriber. The confirm POST (digest.web.signup_confirm) claims the welcome in the transaction that
activates a pending reader (storage.welcome.claim_welcome: one conditional UPDATE of ``welcomed_at``), and
only the request whose UPDATE changed the row hands a `Welcome` to the signup mailer, after the commit. So a
second POST of the link, a re-confirm after unsubscribing, or a reader an operator's import made active
(never pending, so never confirmed here) gets no welcome, and neither does a reader confirmed before the
welcome existed. The mailer (digest.subscribers.signup_mailer) sends it as it sends the confirmation, off the
request path, through the configured transport (`send`). It is sent at most once: a welcome the provider
refuses, or one lost with a mailer that died, is not sent again (the reader gets the next issue all the same).

Rendered like every email (digest.render.environment.render_email: the triplet ``templates/email/welcome.*``)
and addressed like the re-permission email: the recipient token, the name and the List-Unsubscribe headers
are the substitutions and headers of digest.render.mail.recipient.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction
from typing import TYPE_CHECKING

import jinja2

from digest.claim.weeks import cron_trigger
from digest.links import NAME_HTML_TAG, NAME_TEXT_TAG, Links
from digest.render import mail
from digest.render.email import issue_label
from digest.render.environment import RenderError, RenderedEmail, render_email
from digest.render.text import Tagged, clip
from digest.render.verdicts import PICK_NAME_MAX, tally
from digest.subscribers.zones import zone_or_default
from digest.transports.base import Batch
from storage import welcome as rows
from storage.comparisons import load_issue_comparisons
from storage.issues import ranked_comparison_ids
from storage.models import Cadence, SubscriberStatus
from storage.records import ComparisonRecord
from storage.subscribers import find_subscriber

if TYPE_CHECKING:
    from sqlmodel import Session

    from digest.config import Settings
    from digest.services import Services

log = logging.getLogger(__name__)

TEMPLATES = ("email/welcome.subject.j2", "email/welcome.txt.j2", "email/welcome.mjml.j2")
SHOWN = 3  # issue 19: "the latest issue's three clearest verdicts"
# English names whatever the process locale (calendar.day_name follows it), as digest.render.email's months.
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")


@dataclass(frozen=True)
class Welcome:
    """What the confirm page hands the signup mailer: the reader it claimed the welcome for, and when."""

    subscriber_id: int
    now: datetime


# -- the three clearest verdicts ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClearVerdict:
    """A comparison's clearest panel verdict: ``agree`` of the ``seats`` that voted on ``tool`` say ``verdict``."""

    comparison: ComparisonRecord
    tool: str
    verdict: str  # "ship" or "skip"
    agree: int
    seats: int

    @property
    def share(self) -> Fraction:
        return Fraction(self.agree, self.seats)

    @property
    def line(self) -> str:
        """ "Panel: 4 of 4 ship Cellmind" """
        return f"Panel: {self.agree} of {self.seats} {self.verdict} {clip(self.tool, PICK_NAME_MAX)}"


def clearest_verdict(comparison: ComparisonRecord) -> ClearVerdict | None:
    """The verdict of ``comparison``'s panel that the largest share of the seats agree on: for each tool, its
    ship or skip majority (digest.render.verdicts.tally); of equal shares a ship before a skip (a pick is
    what a reader acts on), then more seats, then the tool first on the page. None when no seat voted."""
    found = []
    for tool in comparison.tools:
        votes = tally(tool.reviews)
        if votes.seats:
            verdict, agree = ("ship", votes.ship) if votes.ship >= votes.skip else ("skip", votes.skip)
            found.append(ClearVerdict(comparison=comparison, tool=tool.name, verdict=verdict, agree=agree,
                                      seats=votes.seats))
    # max keeps the first of equals: the tool first on the page
    return max(found, key=lambda v: (v.share, v.verdict == "ship", v.seats), default=None)


def clearest(ranked: Sequence[ComparisonRecord], count: int = SHOWN) -> list[ClearVerdict]:
    """The ``count`` clearest verdicts of an issue whose comparisons come in ``ranked`` (the issue's rank).

    Clarity is the share of a comparison's panel agreeing on one tool's ship or skip (`clearest_verdict`):
    4 of 4 is clearer than 3 of 4, which is clearer than 2 of 4 either way; equal shares keep the issue's
    rank. A comparison no seat voted on has no verdict and is left out, so an issue may show fewer.
    """
    verdicts = [verdict for comparison in ranked if (verdict := clearest_verdict(comparison)) is not None]
    return sorted(verdicts, key=lambda verdict: verdict.share, reverse=True)[:count]  # stable: rank breaks ties


# -- what to expect -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Expectation:
    """When the reader's email comes, in words: "every Thursday at 09:00 UTC", and the first one's date."""

    monthly: bool
    weekday: str  # "Thursday"
    at: str  # "09:00"
    zone: str  # "in your time zone (Pacific/Auckland)", "UTC", "Europe/Berlin time"
    first: str  # "Thursday 3 December", "" when the schedule never fires

    @property
    def when(self) -> str:
        if self.monthly:
            return f"on the first {self.weekday} of each month at {self.at} {self.zone}".rstrip()
        return f"every {self.weekday} at {self.at} {self.zone}".rstrip()


def expectation(*, settings: Settings, zone: str | None, cadence: str, now: datetime) -> Expectation:
    """When a reader of ``cadence`` in ``zone`` (None: DIGEST_TIMEZONE) gets their email: the schedule's weekday
    and hour in their own zone with DIGEST_DELIVERY=local, else in DIGEST_TIMEZONE (issue 19, item 2); a monthly
    reader's on the first scheduled day of a month."""
    tz = zone_or_default(zone, settings.timezone) if settings.delivery == "local" else settings.tz
    own = settings.delivery == "local" and bool(zone) and tz.key == (zone or "").strip()
    trigger = cron_trigger(settings.send_schedule, tz)
    monthly = cadence == Cadence.monthly.value
    first = _first_of_a_month(trigger, tz, now) if monthly else trigger.get_next_fire_time(None, now)
    if first is None:
        return Expectation(monthly=monthly, weekday="scheduled day", at="the scheduled hour", zone="", first="")
    first = first.astimezone(tz)
    if own:
        words = f"in your time zone ({tz.key})"
    else:
        words = "UTC" if tz.key == "UTC" else f"{tz.key} time"
    day = _DAYS[first.weekday()]
    return Expectation(monthly=monthly, weekday=day, at=f"{first.hour:02d}:{first.minute:02d}", zone=words,
                       first=f"{day} {first.day} {_MONTHS[first.month - 1]}")


def _first_of_a_month(trigger, tz, now: datetime) -> datetime | None:
    """The schedule's first firing in this month or the next, whichever is still to come after ``now``."""
    start = now.astimezone(tz).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    for month_start in (start, (start + timedelta(days=32)).replace(day=1)):
        fire = trigger.get_next_fire_time(None, month_start)
        if fire is not None and fire > now and fire.month == month_start.month:
            return fire
    return None


# -- the letter -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Newcomer:
    """What a welcome needs, read in one transaction: the reader, and the latest weekly issue (None before the
    first) with its comparisons as it carried them, in its rank."""

    id: int
    email: str
    name: str
    link_tag: int
    timezone: str | None
    cadence: str
    categories: str
    week: str | None = None
    opened_at: datetime | None = None
    comparisons: tuple[ComparisonRecord, ...] = ()


def read_newcomer(*, session: Session, subscriber_id: int) -> Newcomer | None:
    """The reader to welcome, or None when they are no longer active (they left in the mailer's short wait)."""
    subscriber = find_subscriber(session=session, subscriber_id=subscriber_id)
    if subscriber is None or subscriber.status != SubscriberStatus.active:
        return None
    issue = rows.latest_weekly_issue(session=session)
    week, opened_at, comparisons = None, None, ()
    if issue is not None:
        ranked = ranked_comparison_ids(session=session, issue_id=issue.id)
        week, opened_at = issue.week, issue.created_at
        comparisons = tuple(load_issue_comparisons(session=session, issue_id=issue.id, ids=ranked))
    return Newcomer(id=subscriber.id, email=subscriber.email, name=subscriber.name, link_tag=subscriber.link_tag,
                    timezone=subscriber.timezone, cadence=subscriber.cadence, categories=subscriber.categories,
                    week=week, opened_at=opened_at, comparisons=comparisons)


def render_letter(*, env: jinja2.Environment, settings: Settings, links: Links, newcomer: Newcomer,
                  now: datetime) -> RenderedEmail:
    """The welcome for ``newcomer``, confirmed at ``now``; the token and the name are substitution tags."""
    expect = expectation(settings=settings, zone=newcomer.timezone, cadence=newcomer.cadence, now=now)
    verdicts = clearest(newcomer.comparisons)
    label = ""
    if verdicts and newcomer.week and newcomer.opened_at:
        label = issue_label(newcomer.week, newcomer.opened_at.astimezone(settings.tz).date())
    context = dict(
        settings=settings, expect=expect, max_shown=settings.max_shown, issue_label=label,
        audience="the categories you chose" if newcomer.categories else "every category",
        verdicts=[dict(title=v.comparison.title, line=v.line, url=_direct(v.comparison.url, settings))
                  for v in verdicts],
        preferences_url=Tagged(links.preferences()), unsubscribe_url=Tagged(links.unsubscribe()),
        name_html=Tagged(NAME_HTML_TAG), name_text=Tagged(NAME_TEXT_TAG),
    )
    return render_email(env=env, templates=TEMPLATES, context=context)


def _direct(url: str, settings: Settings) -> str:
    """A verdict's link, straight to the site: only http(s) reaches an href (the click redirect's rule), else
    the site itself."""
    return url if url.startswith(("https://", "http://")) else settings.site_url


def letter_batch(*, settings: Settings, links: Links, email: RenderedEmail, newcomer: Newcomer) -> Batch:
    """One request: the welcome to the reader, with their token, name and List-Unsubscribe headers."""
    token = links.signer.recipient_token(subscriber_id=newcomer.id, delivery_id=None, tag=newcomer.link_tag)
    reader = mail.recipient(None, newcomer.email, newcomer.name, token, links, settings)
    return mail.batch(settings=settings, email=email, recipients=[reader], headers={"List-Id": settings.list_id},
                      categories=["welcome"], custom_args={"kind": "welcome"})


def send(*, services: Services, env: jinja2.Environment, letter: Welcome) -> bool:
    """The signup mailer's work for a `Welcome`: read, render and send it; failures are logged, never raised
    (the mailer has nobody to raise to). True when the transport took it."""
    newcomer = services.transaction(lambda session: read_newcomer(session=session, subscriber_id=letter.subscriber_id))
    if newcomer is None:
        log.info("welcome not sent: subscriber %d is no longer active", letter.subscriber_id)
        return False
    try:
        batch = letter_batch(settings=services.settings, links=services.links, newcomer=newcomer,
                             email=render_letter(env=env, settings=services.settings, links=services.links,
                                                 newcomer=newcomer, now=letter.now))
    except RenderError:
        log.exception("welcome email did not render")
        return False
    return mail.send_letter(services.transport, batch, what="welcome email", sleep=services.sleep) is None
    return False
