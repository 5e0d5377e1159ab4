"""The signup's two rate limits (digest/web/signup_limits.py), each on its own key, and what they store: each limit
counts only its own mailbox or client, the events name their limit and hold an HMAC rather than the address or
the IP, and on PostgreSQL requests racing for the last place of a mailbox let through no more than the limit
(issue 22's mutation run found each of these held by no test)."""

from __future__ import annotations

import re
import threading
from datetime import datetime, timezone

from sqlalchemy import select

from digest.subscribers.confirmation import SignupRequest
from digest.web.signup_limits import count_signup
from storage.db import session_scope
from storage.models import Event

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def signup(address: str) -> SignupRequest:
    return SignupRequest(email=address, email_key=address.lower(), name="", categories="")


def test_a_client_at_its_limit_leaves_other_clients_their_own(web):
    ctx = web.app.state.ctx
    per_client = ctx.settings.signup_per_client_per_hour
    for n in range(per_client):
        assert count_signup(ctx, signup(f"reader{n}@example.com"), "192.0.2.1", now=NOW)
    assert not count_signup(ctx, signup("one.more@example.com"), "192.0.2.1", now=NOW)
    assert count_signup(ctx, signup("one.more@example.com"), "192.0.2.2", now=NOW)


def test_the_events_name_their_limit_and_keep_an_hmac_not_the_address_or_the_ip(web):
    ctx = web.app.state.ctx
    assert count_signup(ctx, signup("Ada.Lovelace+news@example.com"), "198.51.100.7", now=NOW)
    with session_scope(ctx.engine) as session:
        events = session.execute(select(Event.kind, Event.source, Event.detail)).all()
    assert sorted((kind, source, re.sub(r"[0-9a-f]{64}$", "HMAC", detail)) for kind, source, detail in events) == [
        ("signup", "web", "address:HMAC"), ("signup", "web", "client:HMAC")]
    assert not any("lovelace" in detail.lower() or "198.51" in detail for _, _, detail in events)


def test_signups_racing_for_one_mailbox_get_no_more_than_its_limit(web):
    "twelve requests at once for one mailbox, each from its own client: exactly the limit pass (on PostgreSQL the "
    "advisory locks serialise them; on SQLite the one writer does)"
    ctx = web.app.state.ctx
    start, passed = threading.Barrier(12), []

    def one(n: int) -> None:
        start.wait()
        passed.append(count_signup(ctx, signup(f"race+{n}@example.com"), f"203.0.113.{n}", now=NOW))

    threads = [threading.Thread(target=one, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(passed) == [False] * (12 - ctx.settings.signup_per_address_per_hour) + [
        True] * ctx.settings.signup_per_address_per_hour
