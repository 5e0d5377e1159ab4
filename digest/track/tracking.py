"""Opens, clicks and the provider's events, recorded as `Event` rows. The web routes and tests call these.

Every open is an event (total opens); stats count distinct deliveries for unique opens. Opens that a
machine made are recorded too, flagged `machine`, so they can be reported apart and never inflate the
human figures:
- image proxies and prefetchers that say who they are in the user agent (MACHINE_AGENTS);
- anything fetching the pixel within `machine_open_seconds` of the send: Apple Mail Privacy Protection
  fetches every image through Apple's proxy as soon as the message reaches the device, with a user agent
  that is the same as real Apple Mail's, so timing is the only signal we have for it;
- SendGrid's own verdict, `sg_machine_open`, on its open events.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine, insert, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from digest.links import RecipientRef
from digest.subscribers.subscriptions import suppress, unsubscribe
from storage.events import insert_events, open_targets
from storage.db import session_scope
from storage.models import Delivery, Event, Subscriber, SubscriberStatus

USER_AGENT_CHARS = 300  # enough to tell clients apart; a header can be 8 KB

# Case-insensitive fragments of user agents that fetch images or links for, not as, the reader.
MACHINE_AGENTS = re.compile(
    "|".join([
        r"GoogleImageProxy", r"via ggpht\.com",  # Gmail's image proxy
        r"YahooMailProxy",  # Yahoo and AOL Mail
        r"Edge/12\.246",  # Outlook.com / Microsoft Defender prefetch (a fixed, years-old Edge on Chrome/42)
        r"Microsoft Office Existence Discovery", r"Microsoft Office Protocol Discovery", r"BingPreview",
        r"Barracuda", r"Mimecast", r"Proofpoint", r"Symantec", r"Forcepoint", r"IronPort", r"Sophos",
        r"bot\b", r"crawler", r"spider", r"HeadlessChrome", r"facebookexternalhit", r"Slackbot",
        r"python-requests", r"python-urllib", r"aiohttp", r"Go-http-client", r"okhttp", r"Java/", r"libwww-perl",
        r"\bcurl/", r"\bWget/", r"AHC/", r"Amazon CloudFront",
    ]),
    re.IGNORECASE,
)
# Apple Mail Privacy Protection's proxy sometimes sends just this; no mail client does.
BARE_AGENTS = frozenset({"", "mozilla/5.0"})


def is_machine_agent(user_agent: str | None) -> bool:
    agent = user_agent or ""
    # Cached: a list's opens come from a few hundred distinct user agents, and the search (an alternation
    # tried at every position of the string) was 13% of the pixel's time under load (py-spy). Long
    # agents are not cached, so the cache stays small whatever a client sends.
    return _machine_agent_cached(agent) if len(agent) <= 512 else _machine_agent(agent)


def _machine_agent(agent: str) -> bool:
    agent = agent.strip()
    return agent.lower() in BARE_AGENTS or MACHINE_AGENTS.search(agent) is not None


_machine_agent_cached = functools.lru_cache(maxsize=4096)(_machine_agent)


def is_machine_open(*, user_agent: str | None, sent_at: datetime | None, now: datetime, window_seconds: float) -> bool:
    """A proxy or prefetcher by its user agent, or an open too soon after the send for a person."""
    if is_machine_agent(user_agent):
        return True
    return sent_at is not None and now - sent_at < timedelta(seconds=window_seconds)


def _event_row(*, kind: str, source: str, now: datetime, detail: str = "", machine: bool = False,
               delivery_id: int | None = None, subscriber_id: int | None = None, issue_id: int | None = None,
               provider_event_id: str | None = None) -> dict:
    return dict(kind=kind, source=source, occurred_at=now, delivery_id=delivery_id, subscriber_id=subscriber_id,
                issue_id=issue_id, machine=machine, provider_event_id=provider_event_id, detail=detail[:2000])


def record_open(*, engine: Engine, recipient: RecipientRef, user_agent: str | None, now: datetime,
                window_seconds: float) -> bool:
    """Record one pixel fetch: one short transaction, one small SELECT and one INSERT (`record_opens`).

    False (nothing recorded) when the token names no delivery of that subscriber (a test email, or a
    subscriber who deleted their data).
    """
    if recipient.delivery_id is None:
        return False
    return record_opens(engine=engine, opens=[(recipient, user_agent, now)], window_seconds=window_seconds)[0]


def record_opens(*, engine: Engine, opens: list[tuple[RecipientRef, str | None, datetime]],
                 window_seconds: float) -> list[bool]:
    """`record_open` for many fetches in one transaction: one SELECT for their deliveries, one INSERT.

    The pixel's writer process (`digest.track.open_writer`) calls this once per group of opens."""
    ids = {recipient.delivery_id for recipient, _, _ in opens if recipient.delivery_id is not None}
    with engine.begin() as connection:
        # On the DB-API cursor (storage.raw): this runs for every group of pixel fetches.
        found = open_targets(connection=connection, ids=list(ids)) if ids else {}
        rows, results = [], []
        for recipient, user_agent, now in opens:
            target = found.get(recipient.delivery_id)
            if target is None or not _names(recipient, target):
                results.append(False)
                continue
            machine = is_machine_open(user_agent=user_agent, sent_at=target.sent_at, now=now,
                                      window_seconds=window_seconds)
            rows.append(_event_row(kind="open", source="pixel", now=now, machine=machine,
                                   delivery_id=recipient.delivery_id, subscriber_id=target.subscriber_id,
                                   issue_id=target.issue_id, detail=(user_agent or "")[:USER_AGENT_CHARS]))
            results.append(True)
        if rows:
            insert_events(connection=connection, rows=rows)
    return results


def record_click(*, engine: Engine, recipient: RecipientRef, url: str, user_agent: str | None, now: datetime) -> bool:
    """Record a click on ``url``; a link scanner's click is flagged machine by its user agent only."""
    if recipient.delivery_id is None:
        return False
    with engine.begin() as connection:
        target = connection.execute(
            select(Delivery.subscriber_id, Delivery.issue_id, Subscriber.link_tag, Subscriber.accepts_untagged_links)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id).where(Delivery.id == recipient.delivery_id)
        ).first()
        if target is None or not _names(recipient, target):
            return False
        connection.execute(insert(Event).values(**_event_row(
            kind="click", source="click", now=now, machine=is_machine_agent(user_agent), detail=url,
            delivery_id=recipient.delivery_id, subscriber_id=recipient.subscriber_id, issue_id=target.issue_id)))
    return True


def _names(recipient: RecipientRef, target) -> bool:
    """The token was made for this delivery's subscriber row: its id and its tag (a deleted subscriber's
    token names an id that may be someone else's now, never their tag)."""
    return target.subscriber_id == recipient.subscriber_id and recipient.fits(
        link_tag=target.link_tag, accepts_untagged_links=target.accepts_untagged_links)


# -- SendGrid Event Webhook ---------------------------------------------------------------------------------

# Event types we record; anything else (a type SendGrid adds later) is counted as ignored.
PROVIDER_EVENTS = frozenset({"processed", "deferred", "delivered", "open", "click", "bounce", "dropped",
                             "spamreport", "unsubscribe", "group_unsubscribe", "group_resubscribe"})


@dataclass
class WebhookSummary:
    applied: int = 0
    duplicates: int = 0  # an sg_event_id already recorded: SendGrid retries until it sees a 2xx
    ignored: int = 0  # an unknown event type, or neither a known delivery nor a known address


@dataclass(frozen=True)
class Reading:
    """What one provider event means for us: the Event kind to record and the standing it imposes."""

    kind: str
    detail: str = ""
    machine: bool = False
    status: SubscriberStatus | None = None  # bounced, complained or unsubscribed


def read_provider_event(item: dict) -> Reading:
    """Pure: a SendGrid event object → what to record and do."""
    name = item.get("event")
    reason = " ".join(_text(item[key]) for key in ("status", "reason") if item.get(key))
    if name == "open":
        return Reading("open", detail=_text(item.get("useragent", ""), USER_AGENT_CHARS),
                       machine=bool(item.get("sg_machine_open")))
    if name == "click":
        return Reading("click", detail=_text(item.get("url", "")))
    if name == "bounce":
        # type "blocked" is a soft bounce (the receiving server refused for now); "bounce" is hard.
        if item.get("type") == "blocked":
            return Reading("blocked", detail=reason)
        return Reading("bounce", detail=reason, status=SubscriberStatus.bounced)
    if name == "dropped":
        return Reading("dropped", detail=reason, status=_dropped_status(_text(item.get("reason", ""))))
    if name == "spamreport":
        return Reading("spamreport", status=SubscriberStatus.complained)
    if name in ("unsubscribe", "group_unsubscribe"):
        return Reading(name, status=SubscriberStatus.unsubscribed)
    if name == "deferred":
        return Reading("deferred", detail=_text(item.get("response", "")))
    return Reading(_text(name, 50))


def _dropped_status(reason: str) -> SubscriberStatus | None:
    """SendGrid drops a message to an address on its bounce or spam-report list, or an invalid one."""
    reason = reason.strip().lower()
    if "bounced address" in reason or reason == "invalid" or "invalid address" in reason:
        return SubscriberStatus.bounced
    if "spam reporting address" in reason:
        return SubscriberStatus.complained
    return None  # e.g. "Invalid SMTPAPI header" is our request's fault, not the address's


@dataclass(frozen=True)
class Target:
    subscriber_id: int
    delivery_id: int | None = None
    issue_id: int | None = None


def apply_provider_events(*, engine: Engine, events: list[dict], now: datetime) -> WebhookSummary:
    """Record each event once (by sg_event_id) and apply bounces, complaints and unsubscribes: one transaction."""
    summary = WebhookSummary()
    with session_scope(engine) as session:
        targets = _Targets(session, events)
        for item in events:
            target = targets.find(item) if _text(item.get("event"), 50) in PROVIDER_EVENTS else None
            if target is None:
                summary.ignored += 1
                continue
            reading = read_provider_event(item)
            if not _insert_once(session, _event_row(
                    kind=reading.kind, source="webhook", now=_occurred_at(item, now), detail=reading.detail,
                    machine=reading.machine, delivery_id=target.delivery_id, subscriber_id=target.subscriber_id,
                    issue_id=target.issue_id, provider_event_id=_event_id(item))):
                summary.duplicates += 1
                continue
            summary.applied += 1
            if reading.status is not None:
                _change_standing(session, target, reading.status, now)
    return summary


def _change_standing(session: Session, target: Target, status: SubscriberStatus, now: datetime) -> None:
    subscriber = session.get(Subscriber, target.subscriber_id)
    if status == SubscriberStatus.unsubscribed:
        unsubscribe(session=session, subscriber=subscriber, source="webhook", now=now,
                    delivery_id=target.delivery_id, issue_id=target.issue_id)
    else:
        suppress(session=session, subscriber=subscriber, status=status, source="webhook", now=now,
                 delivery_id=target.delivery_id, issue_id=target.issue_id)
    session.flush()


def _insert_once(session: Session, row: dict) -> bool:
    """INSERT … ON CONFLICT DO NOTHING on the provider's event id: a duplicate neither fails nor aborts
    the transaction (on PostgreSQL a failed INSERT would abort every other event of the post)."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    statement = (dialect.insert(Event.__table__).values(**row)
                 .on_conflict_do_nothing(index_elements=["provider_event_id"]).returning(Event.__table__.c.id))
    return session.execute(statement).first() is not None


def _event_id(item: dict) -> str | None:
    value = item.get("sg_event_id")
    return (_text(value, 100) or None) if value else None


def _occurred_at(item: dict, now: datetime) -> datetime:
    try:
        return datetime.fromtimestamp(int(item["timestamp"]), timezone.utc)
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        return now


# Ids are INTEGER columns: 32-bit signed on PostgreSQL (64 on SQLite). A larger number in a query is an error
# there, not an empty result (10**30 was a 500, and so was 2**63 - 1 on PostgreSQL), so an id outside
# 1 … 2**31 - 1 names nothing and never reaches the database.
MAX_ID = 2**31 - 1


def _as_int(value) -> int | None:
    """The id a provider echoes back (we send delivery_id as a string custom arg): digits, or an int."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None  # a float, a list, an object: nothing we sent
    try:
        number = int(value)
    except ValueError:
        return None
    return number if 0 < number <= MAX_ID else None


# PostgreSQL refuses NUL in text, and no driver encodes a lone surrogate (JSON's "\\ud800" decodes to one).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _text(value, limit: int = 2000) -> str:
    """A provider's value as text either database can store. What it cannot store becomes U+FFFD, not
    nothing: "a@x.com\\u0000" must not become a@x.com, someone else's address."""
    if not isinstance(value, str):
        try:
            value = str(value)
        except (ValueError, RecursionError):  # an int over Python's 4,300-digit limit; absurd nesting
            return ""
    return _UNSTORABLE.sub("\ufffd", value[:limit])


class _Targets:
    """Deliveries and subscribers named by a post, loaded in two queries, not one per event."""

    def __init__(self, session: Session, events: list[dict]):
        ids = {i for i in (_as_int(e.get("delivery_id")) for e in events) if i is not None}
        emails = {_email(e) for e in events} - {""}
        self.deliveries = {row.id: row for row in session.execute(
            select(Delivery.id, Delivery.issue_id, Delivery.subscriber_id, Subscriber.email_key)
            .join(Subscriber, Subscriber.id == Delivery.subscriber_id).where(Delivery.id.in_(ids)))} if ids else {}
        self.by_email = dict(session.execute(
            select(Subscriber.email_key, Subscriber.id).where(Subscriber.email_key.in_(emails))).all()) if emails else {}

    def find(self, item: dict) -> Target | None:
        """By the delivery_id we sent as a custom arg (when the address agrees), else by the address."""
        email = _email(item)
        delivery = self.deliveries.get(_as_int(item.get("delivery_id")))
        if delivery is not None and (not email or email == delivery.email_key):
            return Target(subscriber_id=delivery.subscriber_id, delivery_id=delivery.id, issue_id=delivery.issue_id)
        subscriber_id = self.by_email.get(email)
        return Target(subscriber_id=subscriber_id) if subscriber_id is not None else None


def _email(item: dict) -> str:
    return _text(item.get("email") or "").strip().lower()
