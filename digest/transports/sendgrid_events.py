"""SendGrid's signed Event Webhook: its signature, and its events read as ours (digest.track.events.ProviderEvent).

The only module that knows SendGrid's event format: its event names, `sg_event_id`, `sg_machine_open`, its
bounce types and drop reasons, and the custom args we send with each message (`delivery_id`), which come
back as top-level keys of each event.

Trust nothing unsigned: the body must carry a valid ECDSA signature (P-256, SHA-256 over timestamp + raw
body) under the public key SendGrid shows (DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY), and a timestamp of the last
10 minutes (`webhook_max_age_seconds`), so a captured post cannot be replayed later. Within that window a
replay changes nothing either: each event is recorded once by its sg_event_id.
"""

from __future__ import annotations

import binascii
import json
import re
from collections.abc import Mapping
from datetime import datetime, timezone
from functools import lru_cache

from sendgrid import EventWebhook

from digest.track.events import ProviderEvent
from digest.track.opens import USER_AGENT_CHARS
from storage.models import SubscriberStatus

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
MAX_FUTURE_SECONDS = 300  # clock skew we tolerate between SendGrid and us

# Event types we record; anything else (a type SendGrid adds later) is counted as ignored.
SENDGRID_EVENTS = frozenset({"processed", "deferred", "delivered", "open", "click", "bounce", "dropped",
                             "spamreport", "unsubscribe", "group_unsubscribe", "group_resubscribe"})


class Refused(Exception):
    """A post that is not SendGrid's signed post. ``reason`` says why, for the log (the answer never does);
    None for a body that is not even UTF-8."""

    def __init__(self, reason: str | None):
        super().__init__(reason)
        self.reason = reason


# -- the signature -------------------------------------------------------------------------------------------

@lru_cache(maxsize=4)
def _verifier(public_key: str) -> EventWebhook:
    return EventWebhook(public_key)  # parses the key once per key, not once per post


def key_usable(public_key: str) -> bool:
    """``public_key`` is a key SendGrid shows: base64 DER (no PEM lines)."""
    try:
        _verifier(public_key)
    except ValueError:
        return False
    return True


def signature_ok(*, public_key: str, body: str, signature: str, timestamp: str) -> bool:
    try:
        return _verifier(public_key).verify_signature(body, signature, timestamp)
    except (ValueError, TypeError, binascii.Error):  # undecodable signature or malformed DER
        return False


def verified_body(*, public_key: str, headers: Mapping[str, str], raw: bytes, now: float, max_age: int) -> str:
    """The body of a post SendGrid signed within ``max_age`` seconds of ``now``; else `Refused`.

    ``public_key`` is one `key_usable` accepts."""
    signature = headers.get(SIGNATURE_HEADER, "")
    timestamp = headers.get(TIMESTAMP_HEADER, "")
    try:
        body = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise Refused(None) from None
    if not signature or not _fresh(timestamp, now, max_age):
        raise Refused(f"missing signature or stale timestamp {timestamp[:20]!r}")
    if not signature_ok(public_key=public_key, body=body, signature=signature, timestamp=timestamp):
        raise Refused("bad signature")
    return body


def _fresh(timestamp: str, now: float, max_age: int) -> bool:
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    return now - max_age <= sent <= now + MAX_FUTURE_SECONDS


# -- the events ----------------------------------------------------------------------------------------------

def event_items(body: str) -> list[dict] | None:
    """The signed body's event objects, or None when it is not a JSON array of objects."""
    try:
        items = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: arrays nested ~1,000 deep
        return None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        return None
    return items


def read_events(items: list[dict], *, now: datetime) -> list[ProviderEvent | None]:
    """Each item as ours; None for an event type we do not record. ``now`` when an item's time is unusable."""
    return [read_event(item, now=now) if _text(item.get("event"), 50) in SENDGRID_EVENTS else None
            for item in items]


def read_event(item: dict, *, now: datetime) -> ProviderEvent:
    """Pure: one of SendGrid's event objects (of a type in SENDGRID_EVENTS) → our `ProviderEvent`."""
    name = item.get("event")
    found = dict(occurred_at=_occurred_at(item, now), provider_event_id=_event_id(item),
                 delivery_id=_as_int(item.get("delivery_id")), email=_email(item))
    reason = " ".join(_text(item[key]) for key in ("status", "reason") if item.get(key))
    if name == "open":
        return ProviderEvent("open", detail=_text(item.get("useragent", ""), USER_AGENT_CHARS),
                             machine=bool(item.get("sg_machine_open")), **found)
    if name == "click":
        return ProviderEvent("click", detail=_text(item.get("url", "")), **found)
    if name == "bounce":
        # type "blocked" is a soft bounce (the receiving server refused for now); "bounce" is hard.
        if item.get("type") == "blocked":
            return ProviderEvent("soft_bounce", detail=reason, **found)
        return ProviderEvent("bounce", detail=reason, standing=SubscriberStatus.bounced, **found)
    if name == "dropped":
        return ProviderEvent("dropped", detail=reason, standing=_dropped_status(_text(item.get("reason", ""))),
                             **found)
    if name == "spamreport":
        return ProviderEvent("complaint", standing=SubscriberStatus.complained, **found)
    if name in ("unsubscribe", "group_unsubscribe"):
        return ProviderEvent(name, standing=SubscriberStatus.unsubscribed, **found)
    if name == "deferred":
        return ProviderEvent("deferred", detail=_text(item.get("response", "")), **found)
    return ProviderEvent(_text(name, 50), **found)  # processed, delivered, group_resubscribe


def _dropped_status(reason: str) -> SubscriberStatus | None:
    """SendGrid drops a message to an address on its bounce or spam-report list, or an invalid one."""
    reason = reason.strip().lower()
    if "bounced address" in reason or reason == "invalid" or "invalid address" in reason:
        return SubscriberStatus.bounced
    if "spam reporting address" in reason:
        return SubscriberStatus.complained
    return None  # e.g. "Invalid SMTPAPI header" is our request's fault, not the address's


def _event_id(item: dict) -> str | None:
    value = item.get("sg_event_id")
    return (_text(value, 100) or None) if value else None


def _occurred_at(item: dict, now: datetime) -> datetime:
    try:
        return datetime.fromtimestamp(int(item["timestamp"]), timezone.utc)
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        return now


def _as_int(value) -> int | None:
    """The id SendGrid echoes back (we send delivery_id as a string custom arg): digits, or an int. One
    outside our ids' range names no delivery (storage.events.MAX_ID)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None  # a float, a list, an object: nothing we sent
    try:
        return int(value)
    except ValueError:
        return None


def _email(item: dict) -> str:
    return _text(item.get("email") or "").strip().lower()


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
    value = value[:limit]
    if value.isascii() and "\x00" not in value:
        return value  # most are: no surrogate, no NUL (a scan in C, where the substitution took ~0.5 µs)
    return _UNSTORABLE.sub("\ufffd", value)
