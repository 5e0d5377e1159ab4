"""The signup rate limits, per mailbox and per client: all the database work a signup request does.

The counts are Event rows (kind "signup") so they hold across processes. Their detail is an HMAC of the
mailbox or client IP under the secret key, never the value itself: a plain SHA-256 of an IPv4 address is
undone by trying all 2^32 of them. Both limits count whoever owns the address, so a 429 tells nothing.

The per-address limit counts the mailbox, not the string typed: `Ada+1@Example.com`, `ada+2@example.com`
and `ada@example.com` reach one inbox, and before this four such variants got 12 confirmations an hour into
it. `mailbox_key` is for counting only; the address is stored as typed.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta

from digest.subscribers.confirmation import SignupRequest
from digest.web.context import WebContext
from storage.db import session_scope
from storage.subscribers import count_signups, lock_signup_keys, record_event

RATE_WINDOW = timedelta(hours=1)


def mailbox_key(email_key: str) -> str:
    """The mailbox an address reaches, for counting: lower case, the local part without its `+tag`.

    Dots stay: only Gmail ignores them, and `a.b@example.com` may be another person's inbox elsewhere.
    """
    local, _, domain = email_key.casefold().rpartition("@")
    base = local.split("+", 1)[0] or local  # "+tag@x" alone is an address of its own, not an empty local part
    return f"{base}@{domain}"


def count_signup(ctx: WebContext, signup: SignupRequest, client: str, *, now: datetime) -> bool:
    """Count the signup against both limits: False when one is reached (nothing recorded), else True with the
    signup counted. One transaction, the same queries whoever owns the address: what the signup leads to is
    the signup mailer's business (digest.subscribers.signup_mailer), outside the request."""
    keys = {"address": _hashed(ctx, "address", mailbox_key(signup.email_key)),
            "client": _hashed(ctx, "client", client)}
    limits = {"address": ctx.settings.signup_per_address_per_hour, "client": ctx.settings.signup_per_client_per_hour}
    with session_scope(ctx.engine) as session:
        lock_signup_keys(session=session, keys=[_lock_key(detail) for detail in sorted(keys.values())])
        for kind, detail in keys.items():
            if count_signups(session=session, detail=detail, since=now - RATE_WINDOW) >= limits[kind]:
                return False
        for detail in keys.values():
            record_event(session=session, kind="signup", source="web", now=now, detail=detail)
    return True


def _hashed(ctx: WebContext, kind: str, value: str) -> str:
    digest = hmac.new(ctx.settings.secret_key.encode(), f"signup:{kind}:{value}".encode(), hashlib.sha256)
    return f"{kind}:{digest.hexdigest()}"


def _lock_key(detail: str) -> int:
    """The advisory lock that serialises signups for one mailbox or client (storage.subscribers.lock_signup_keys):
    60 bits of the HMAC, so that it fits PostgreSQL's signed bigint."""
    return int(detail.rpartition(":")[2][:15], 16)
