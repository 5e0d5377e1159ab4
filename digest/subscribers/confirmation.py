"""Double opt-in: the signed confirmation link, what a signup and a confirmation do to the store, and the
email a signup sends (the triplet ``templates/email/confirm.*``, rendered like the digest).

A signup never tells the person at the form who subscribes: the web answer is the same whatever happens
here, and the one who learns anything is the owner of the address, by email:

- a new, pending or unsubscribed address gets a confirmation link (confirming is their own action);
- an active one gets "you are already subscribed", with a link to their preferences;
- a bounced, complained or otherwise suppressed one gets nothing.

What the person chose at the form (name, categories, and the time zone the page read from their browser)
travels inside the signed link and is stored only when the owner of the address confirms, so nobody can change
a known subscriber's settings, or put words in their `To:` and greeting, by typing their address into the
form: a signup stores no name on any row, and the email it sends carries no name at all (whoever typed one may
not own the address).

None of this runs in the request: the web process counts the signup and hands it to digest.subscribers.signup_mailer,
whose own process calls `answer` — record it (`plan_signup`), render the letter and send it unless its kind
is "none" — so whatever the address, the request does the same work and its timing tells nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import jinja2
from itsdangerous import BadSignature, TimestampSigner, URLSafeTimedSerializer

from digest.subscribers import subscriptions
from digest.config import Settings
from digest.links import BadToken, Links, tag_fits
from digest.subscribers.names import name_problem
from digest.subscribers.zones import UnknownZone, checked_zone
from digest.render.environment import RenderError, RenderedEmail, render_email
from digest.render import mail
from digest.transports.base import Batch, Recipient, Transport
from storage import subscribers as rows
from storage.db import in_transaction
from storage.faults import Conflict
from storage.models import SubscriberStatus

if TYPE_CHECKING:
    from sqlmodel import Session

    from digest.services import Services

    from storage.models import Subscriber

log = logging.getLogger(__name__)

CONFIRM_SALT = "digest.confirm.v1"  # its own salt: a confirmation token is never a recipient or link token
TEMPLATES = ("email/confirm.subject.j2", "email/confirm.txt.j2", "email/confirm.mjml.j2")
# An unsubscribe within this long after the link was signed does not void it: timestamps are whole seconds.
_CLOCK_SLACK = timedelta(seconds=1)


@dataclass(frozen=True)
class SignupRequest:
    email: str  # normalized (digest.importing.normalize_address)
    email_key: str
    name: str  # cleaned, may be ""
    categories: str  # canonical; "" = every category
    timezone: str | None = None  # checked (digest.subscribers.zones); None: the browser sent none we know


@dataclass(frozen=True)
class ConfirmRef:
    """What a valid confirmation link says: who, which address, what they chose, and when it was signed."""

    subscriber_id: int
    address_hash: str  # of the email_key the link was sent to: a changed address voids the link
    name: str
    categories: str
    issued_at: datetime
    tag: int | None = None  # the row's link_tag (digest.links); None in a link signed before tags
    timezone: str | None = None  # the browser's zone at signup; None without one, or in a link signed before zones


@dataclass(frozen=True)
class Outgoing:
    """The one letter a signup hands over: a confirmation link ("confirm"), the link to an active subscriber's
    preferences ("already"), or nothing to send ("none": rendered like a confirmation, then dropped)."""

    kind: str
    email: str
    url: str

    @property
    def already(self) -> bool:
        return self.kind == "already"


class _ClockSigner(TimestampSigner):
    """itsdangerous reads the time itself; ours is passed in (tests move it a week ahead)."""

    def __init__(self, *args, clock: Callable[[], datetime], **kwargs):
        super().__init__(*args, **kwargs)
        self._clock = clock

    def get_timestamp(self) -> int:
        return int(self._clock().timestamp())


class ConfirmTokens:
    """Signed, timestamped confirmation tokens; old secret keys still verify (a rotation breaks no link)."""

    def __init__(self, secret_key: str, old_keys=(), *, clock: Callable[[], datetime], max_age: timedelta):
        self._serializer = URLSafeTimedSerializer([*old_keys, secret_key], salt=CONFIRM_SALT, signer=_ClockSigner,
                                                  signer_kwargs={"clock": clock})
        self._max_age = int(max_age.total_seconds())

    @classmethod
    def for_settings(cls, settings: Settings, *, clock: Callable[[], datetime]) -> "ConfirmTokens":
        return cls(settings.secret_key, settings.old_secret_keys, clock=clock,
                   max_age=timedelta(days=settings.confirm_max_age_days))

    def dumps(self, *, subscriber_id: int, email_key: str, name: str, categories: str, tag: int,
              zone: str | None = None) -> str:
        # The address goes in as a hash: the token is readable (signed, not encrypted) and lands in access logs.
        return self._serializer.dumps([subscriber_id, _address_hash(email_key), name, categories, tag, zone or ""])

    def read(self, token: str) -> ConfirmRef:
        """The link's content; raises BadToken when forged, altered, expired or signed in the future."""
        try:
            payload, issued = self._serializer.loads(token, max_age=self._max_age, return_timestamp=True)
            # After the categories: the tag, then the zone; a link signed before either has neither.
            subscriber_id, address_hash, name, categories, *later = payload
        except (BadSignature, ValueError, TypeError) as exc:
            raise BadToken() from exc
        tag = later[0] if later else None
        zone = later[1] if len(later) > 1 else ""
        if not (isinstance(subscriber_id, int) and all(isinstance(v, str) for v in (address_hash, name, categories))
                and len(later) <= 2 and (not later or type(tag) is int) and isinstance(zone, str)):
            raise BadToken()
        return ConfirmRef(subscriber_id=subscriber_id, address_hash=address_hash, name=name, categories=categories,
                          issued_at=issued.astimezone(timezone.utc), tag=tag, timezone=_usable_zone(zone))


def _usable_zone(name: str) -> str | None:
    """A signed zone, checked again: the server's zone database may have lost it since the signup (rare)."""
    try:
        return checked_zone(name)
    except UnknownZone:
        return None


def _address_hash(email_key: str) -> str:
    return hashlib.sha256(email_key.encode("utf-8")).hexdigest()[:32]  # 128 bits: binds the link to the address


def is_suppressed(*, session: Session, email_key: str) -> bool:
    """Never mail this address: subscriptions.is_suppressed (it also knows deleted addresses)."""
    return subscriptions.is_suppressed(session, email_key)


def plan_signup(*, session: Session, signup: SignupRequest, tokens: ConfirmTokens, links: Links,
                now: datetime) -> Outgoing:
    """Record a signup and say which letter to send.

    An unknown address becomes a pending row with no name (the name travels in the link); a known row of
    any status is left as it is. Whatever the address, the same queries run and both links are made: the
    signup mailer's load on the machine does not depend on who owns the address either.
    """
    suppressed = is_suppressed(session=session, email_key=signup.email_key)
    subscriber = rows.find_by_email_key(session=session, email_key=signup.email_key)
    if subscriber is None and not suppressed:
        subscriber = rows.add_pending(session=session, email=signup.email, email_key=signup.email_key,
                                      categories=signup.categories, timezone=signup.timezone, now=now)
    subscriber_id, tag = (subscriber.id, subscriber.link_tag) if subscriber is not None else (0, 0)
    confirm_url = f"{links.base_url}/confirm/" + tokens.dumps(
        subscriber_id=subscriber_id, email_key=signup.email_key, name=signup.name, categories=signup.categories,
        tag=tag, zone=signup.timezone)
    preferences_url = links.preferences(links.signer.recipient_token(subscriber_id=subscriber_id, delivery_id=None,
                                                                      tag=tag))
    if subscriber is None or suppressed or SubscriberStatus(subscriber.status) in subscriptions.SUPPRESSED:
        return Outgoing(kind="none", email=signup.email, url=confirm_url)
    if subscriber.status == SubscriberStatus.active:
        return Outgoing(kind="already", email=subscriber.email, url=preferences_url)
    return Outgoing(kind="confirm", email=subscriber.email, url=confirm_url)


def confirmable(*, session: Session, ref: ConfirmRef) -> Subscriber | None:
    """The subscriber a valid link may confirm (or has confirmed), else None: the same None for every reason."""
    subscriber = rows.find_subscriber(session=session, subscriber_id=ref.subscriber_id)
    if subscriber is None or not hmac.compare_digest(_address_hash(subscriber.email_key), ref.address_hash):
        return None
    if not tag_fits(ref.tag, link_tag=subscriber.link_tag, accepts_untagged_links=subscriber.accepts_untagged_links):
        return None  # a link made for a row deleted since, even if the same address signed up again
    status = SubscriberStatus(subscriber.status)
    if status in subscriptions.SUPPRESSED or is_suppressed(session=session, email_key=subscriber.email_key):
        return None
    if status == SubscriberStatus.unsubscribed and subscriber.unsubscribed_at is not None \
            and subscriber.unsubscribed_at > ref.issued_at + _CLOCK_SLACK:
        return None  # they left after this link was sent: an old link does not bring them back
    return subscriber


def confirmed_name(ref: ConfirmRef) -> str:
    """The name a link stores: "" for one digest.subscribers.names refuses (a link signed before signups refused them)."""
    return "" if name_problem(ref.name) else ref.name


def confirm(*, session: Session, ref: ConfirmRef, now: datetime) -> Subscriber | None:
    """Activate the subscriber with what they chose at the form. Idempotent: an active one stays as it is
    (an old link never overwrites preferences changed since).

    The name becomes the link's: a pending row's own name was never confirmed by anyone (rows stored
    before signups stopped writing names may hold a stranger's), so without one in the link it is cleared;
    a returning subscriber who typed none keeps the name they confirmed before. The time zone likewise: the
    link's, else a returning subscriber's own, else none (DIGEST_TIMEZONE).
    """
    subscriber = confirmable(session=session, ref=ref)
    return activate(session=session, subscriber=subscriber, ref=ref, now=now) if subscriber is not None else None


def activate(*, session: Session, subscriber: Subscriber, ref: ConfirmRef, now: datetime) -> Subscriber:
    """`confirm` for the subscriber `confirmable` found for ``ref``: the page's dependency has looked it up."""
    if subscriber.status == SubscriberStatus.active:
        return subscriber
    returning = subscriber.status != SubscriberStatus.pending
    kept, kept_zone = (subscriber.name, subscriber.timezone) if returning else ("", None)
    rows.update_subscriber(subscriber=subscriber, now=now, status=SubscriberStatus.active, confirmed_at=now,
                           unsubscribed_at=None, paused_until=None, categories=ref.categories,
                           name=confirmed_name(ref) or kept, timezone=ref.timezone or kept_zone)
    subscriptions.record_event(session=session, kind="confirm", source="web", now=now, subscriber_id=subscriber.id)
    return subscriber


# -- the email ------------------------------------------------------------------------------------------------

def render_letter(*, env: jinja2.Environment, settings: Settings, outgoing: Outgoing) -> RenderedEmail:
    """The confirmation (or "already subscribed") email for one person, rendered for them alone: no tags, and
    no name — whoever typed the address may not own it, so nothing they typed but the choices in the link."""
    context = dict(already=outgoing.already, url=outgoing.url, settings=settings,
                   max_age_days=settings.confirm_max_age_days)
    return render_email(env=env, templates=TEMPLATES, context=context)


def batch_for(*, settings: Settings, email: RenderedEmail, outgoing: Outgoing) -> Batch:
    """One recipient, no substitutions and no List-Unsubscribe: a transactional email they asked for."""
    person = Recipient(delivery_id=None, email=outgoing.email, name="", substitutions={}, headers={})
    kind = "signup-already-subscribed" if outgoing.already else "signup-confirmation"
    return mail.batch(settings=settings, email=email, recipients=[person], categories=[kind], custom_args={"kind": kind})


def answer(*, services: Services, env: jinja2.Environment, signup: SignupRequest, now: datetime) -> bool:
    """All a signup leads to, outside the request path (digest.subscribers.signup_mailer): record it and send the one email
    it calls for, if any; ``now`` is when the request came. True when an email was sent."""
    tokens = ConfirmTokens.for_settings(services.settings, clock=lambda: now)

    def plan(session: Session) -> Outgoing:
        return plan_signup(session=session, signup=signup, tokens=tokens, links=services.links, now=now)

    try:
        outgoing = in_transaction(services.engine, plan, budget=60.0)
    except Conflict:  # another web process stored the same new address a moment ago: it is known now
        outgoing = in_transaction(services.engine, plan, budget=60.0)
    return deliver(transport=services.transport, env=env, settings=services.settings, outgoing=outgoing)


def deliver(*, transport: Transport, env: jinja2.Environment, settings: Settings, outgoing: Outgoing,
            sleep: Callable[[float], None] = time.sleep) -> bool:
    """Render, and send unless the letter is "none": failures are logged, never raised. True when sent."""
    try:
        batch = batch_for(settings=settings, email=render_letter(env=env, settings=settings, outgoing=outgoing),
                          outgoing=outgoing)
    except RenderError:
        log.exception("signup email did not render")
        return False
    if outgoing.kind == "none":
        return False
    return mail.send_letter(transport, batch, what="signup email", sleep=sleep) is None
    return False
