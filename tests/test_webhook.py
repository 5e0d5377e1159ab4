"""SendGrid's signed Event Webhook, through HTTP, on SQLite and PostgreSQL: signed the way SendGrid signs."""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from digest.web import create_app
from digest.claim.opening import open_issue
from storage.db import make_engine, session_scope
from storage.models import Delivery, Event, Subscriber
from tests.factories import RecordingTransport, add_comparison, add_subscribers
from tests.fixtures_web import web_settings
from tests.test_web_tracking import Sent, events, sent_delivery

KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
# What SendGrid shows under Mail Settings → Signed Event Webhook: base64 DER, no PEM lines.
PUBLIC_KEY = base64.b64encode(KEY.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"


def signed(body: str, *, key=KEY, at: float | None = None) -> dict[str, str]:
    """Headers as SendGrid sends them: ECDSA P-256 / SHA-256 over timestamp + body, base64 DER."""
    timestamp = str(int(time.time() if at is None else at))
    signature = key.sign((timestamp + body).encode(), ec.ECDSA(hashes.SHA256()))
    return {SIGNATURE: base64.b64encode(signature).decode(), TIMESTAMP: timestamp, "Content-Type": "application/json"}


def post(client, items: list[dict], **sign) -> "httpx.Response":  # noqa: F821
    body = json.dumps(items)
    return client.post("/webhooks/sendgrid", content=body, headers=signed(body, **sign))


@pytest.fixture
def hook(db_url):
    """The app with the public key configured."""
    engine = make_engine(db_url)
    app = create_app(web_settings(db_url, sendgrid_webhook_public_key=PUBLIC_KEY), engine=engine,
                     transport=RecordingTransport())
    with TestClient(app, base_url="http://testserver") as client:
        yield client
    engine.dispose()


def sg_event(delivery: Sent, name: str, event_id: str, **extra) -> dict:
    """One event as SendGrid posts it, to the delivery's address: our custom_args appear as top-level keys."""
    return {"email": extra.pop("email", None) or delivery.email,
            "timestamp": int(time.time()), "event": name, "sg_event_id": event_id,
            "sg_message_id": "msg.filter0001", "issue": "2026-W48", "segment": "1", "delivery_id": str(delivery.id),
            "category": ["weekly-digest", "2026-W48"], **extra}


def status_of(engine, subscriber_id: int) -> str:
    with session_scope(engine) as session:
        return session.get(Subscriber, subscriber_id).status


def event_count(engine) -> int:
    with session_scope(engine) as session:
        return session.scalar(select(func.count()).select_from(Event))


def ago(hours: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(hours=hours)


def test_a_signed_post_applies_each_kind_of_event(hook):
    "delivered, human and machine opens, a click, a bounce, a spam report, an unsubscribe: each applied"
    engine = hook.app.state.ctx.engine
    d = {name: sent_delivery(engine, sent_at=ago(1)) for name in ("read", "bounce", "spam", "unsub", "group")}
    items = [
        sg_event(d["read"], "delivered", "e1"),
        sg_event(d["read"], "open", "e2", sg_machine_open=True, useragent="Mozilla/5.0"),
        sg_event(d["read"], "open", "e3", sg_machine_open=False),
        sg_event(d["read"], "click", "e4", url="https://verdicts.example.com/compare/x"),
        sg_event(d["bounce"], "bounce", "e5", type="bounce", status="5.1.1",
                 reason="550 5.1.1 no such user"),
        sg_event(d["spam"], "spamreport", "e6"),
        sg_event(d["unsub"], "unsubscribe", "e7"),
        sg_event(d["group"], "group_unsubscribe", "e8", asm_group_id=1),
    ]
    response = post(hook, items)
    assert response.status_code == 200
    assert response.json() == {"applied": 8, "duplicates": 0, "ignored": 0}
    assert [(e.kind, e.machine) for e in events(engine, delivery_id=d["read"].id)] == [
        ("delivered", False), ("open", True), ("open", False), ("click", False)]
    assert events(engine, provider_event_id="e4")[0].detail == "https://verdicts.example.com/compare/x"
    assert {e.issue_id for e in events(engine, source="webhook")} >= {d["read"].issue_id}
    assert status_of(engine, d["read"].subscriber_id) == "active"
    assert status_of(engine, d["bounce"].subscriber_id) == "bounced"
    assert status_of(engine, d["spam"].subscriber_id) == "complained"
    assert status_of(engine, d["unsub"].subscriber_id) == "unsubscribed"
    assert status_of(engine, d["group"].subscriber_id) == "unsubscribed"


def test_a_replayed_post_counts_duplicates_and_records_nothing_twice(hook):
    "the same post again (SendGrid retries), plus one new event: only the new one is applied"
    engine = hook.app.state.ctx.engine
    delivery = sent_delivery(engine, sent_at=ago(1))
    items = [sg_event(delivery, "delivered", "r1"), sg_event(delivery, "open", "r2")]
    assert post(hook, items).json() == {"applied": 2, "duplicates": 0, "ignored": 0}
    before = event_count(engine)
    replay = post(hook, [*items, sg_event(delivery, "click", "r3", url="https://example.com/")])
    assert replay.json() == {"applied": 1, "duplicates": 2, "ignored": 0}
    assert event_count(engine) == before + 1
    assert post(hook, [items[0], items[0]]).json() == {"applied": 0, "duplicates": 2, "ignored": 0}


def test_forged_altered_unsigned_and_stale_posts_are_refused_and_change_nothing(hook):
    "wrong key, altered body, missing headers, garbage signature, 11 minutes old, 10 minutes ahead: 403 each"
    engine = hook.app.state.ctx.engine
    delivery = sent_delivery(engine, sent_at=ago(1))
    body = json.dumps([sg_event(delivery, "bounce", "f1", type="bounce")])
    good = signed(body)
    attempts = [
        (body, signed(body, key=OTHER_KEY)),
        (body.replace("bounce", "spamreport"), good),
        (body, {}),
        (body, {TIMESTAMP: good[TIMESTAMP]}),
        (body, {SIGNATURE: good[SIGNATURE]}),
        (body, {**good, SIGNATURE: "not base64!"}),
        (body, {**good, SIGNATURE: base64.b64encode(b"\x30\x02junk").decode()}),
        (body, {**good, TIMESTAMP: "yesterday"}),
        (body, signed(body, at=time.time() - 11 * 60)),
        (body, signed(body, at=time.time() + 10 * 60)),
    ]
    for content, headers in attempts:
        response = hook.post("/webhooks/sendgrid", content=content, headers=headers)
        assert response.status_code == 403, (content, headers)
    assert event_count(engine) == 0
    assert status_of(engine, delivery.subscriber_id) == "active"


def test_no_public_key_configured_refuses_every_post_with_a_log_line(web, caplog):
    "the key is not set: 503 (SendGrid retries later), nothing recorded, and the log says which setting"
    delivery = sent_delivery(web.app.state.ctx.engine, sent_at=ago(1))
    item = {"event": "bounce", "type": "bounce", "sg_event_id": "n1", "delivery_id": str(delivery.id)}
    with caplog.at_level("ERROR", logger="digest.web"):
        response = post(web, [item])
    assert response.status_code == 503
    assert any("DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY" in r.message for r in caplog.records)
    assert event_count(web.app.state.ctx.engine) == 0


def test_soft_bounces_and_harmless_drops_are_recorded_without_suppressing(hook):
    "a blocked bounce and a drop for a bad header: recorded; the reader stays active; a 'Bounced Address' drop suppresses"
    engine = hook.app.state.ctx.engine
    soft, dropped = sent_delivery(engine, sent_at=ago(1)), sent_delivery(engine, sent_at=ago(1))
    response = post(hook, [
        sg_event(soft, "bounce", "s1", type="blocked", reason="421 try later"),
        sg_event(soft, "dropped", "s2", reason="Invalid SMTPAPI header"),
        sg_event(soft, "deferred", "s3", response="451 busy"),
        sg_event(dropped, "dropped", "s4", reason="Bounced Address"),
    ])
    assert response.json() == {"applied": 4, "duplicates": 0, "ignored": 0}
    assert [e.kind for e in events(engine, delivery_id=soft.id)] == ["blocked", "dropped", "deferred"]
    assert status_of(engine, soft.subscriber_id) == "active"
    assert status_of(engine, dropped.subscriber_id) == "bounced"


def test_events_without_a_known_delivery_fall_back_to_the_address_or_are_ignored(hook):
    "unknown delivery_id with a known address (any case) is applied to the subscriber; neither known: ignored"
    engine = hook.app.state.ctx.engine
    delivery = sent_delivery(engine, sent_at=ago(1), email="Known.Reader@Example.com")
    items = [
        {"event": "bounce", "type": "bounce", "sg_event_id": "u1", "email": "KNOWN.reader@example.COM",
         "delivery_id": "999999", "timestamp": int(time.time())},
        {"event": "spamreport", "sg_event_id": "u2", "email": "stranger@example.com", "timestamp": int(time.time())},
        {"event": "open", "sg_event_id": "u3", "timestamp": int(time.time())},
        {"event": "something_new", "sg_event_id": "u4", "email": "known.reader@example.com"},
    ]
    assert post(hook, items).json() == {"applied": 1, "duplicates": 0, "ignored": 3}
    bounce = events(engine, provider_event_id="u1")[0]
    assert (bounce.subscriber_id, bounce.delivery_id) == (delivery.subscriber_id, None)
    assert status_of(engine, delivery.subscriber_id) == "bounced"


def test_a_body_that_is_not_an_event_array_is_a_400(hook):
    "a signed body that is not a JSON array of objects: 400, nothing recorded"
    for body in ('{"event": "open"}', "[1, 2]", "not json"):
        assert hook.post("/webhooks/sendgrid", content=body, headers=signed(body)).status_code == 400
    assert event_count(hook.app.state.ctx.engine) == 0


def test_a_body_nested_past_pythons_recursion_limit_is_a_400(hook):
    "a signed body of arrays nested 5,000 deep (json.loads raises RecursionError, not ValueError): 400"
    body = "[" * 5000 + "]" * 5000
    response = hook.post("/webhooks/sendgrid", content=body, headers=signed(body))
    assert response.status_code == 400 and event_count(hook.app.state.ctx.engine) == 0


def test_values_no_delivery_id_or_address_can_hold_are_ignored_not_a_500(hook):
    "ids past the INTEGER column (10**30, 2**31), negative, float, text, a list; NUL and lone surrogates: ignored"
    engine = hook.app.state.ctx.engine
    delivery = sent_delivery(engine, sent_at=ago(2))
    odd_ids = [10**30, 2**63 - 1, 2**31, -1, 0, 1.5, 1e300, "abc", [delivery.id], {"id": 1}, True, str(10**30)]
    items = [{"event": "delivered", "sg_event_id": f"odd-{n}", "delivery_id": value, "email": "nobody@example.com"}
             for n, value in enumerate(odd_ids)]
    items += [{"event": "bounce", "sg_event_id": "nul", "email": delivery.email + "\x00"},
              {"event": "bounce", "sg_event_id": "surrogate\ud800", "email": "\udc00" + delivery.email},
              {"event": ["bounce"], "sg_event_id": "list", "email": delivery.email},
              {"event": "open", "sg_event_id": "ua\x00", "useragent": "Mail\x00\ud800",
               "delivery_id": str(delivery.id)}]
    response = post(hook, items)
    assert response.status_code == 200, response.text
    assert response.json() == {"applied": 1, "duplicates": 0, "ignored": len(items) - 1}
    assert status_of(engine, delivery.subscriber_id) == "active"
    with session_scope(engine) as session:
        event = session.scalars(select(Event).where(Event.kind == "open")).one()
    assert (event.provider_event_id, event.detail, event.delivery_id) == ("ua\ufffd", "Mail\ufffd\ufffd", delivery.id)


def test_after_a_bounce_the_next_issue_leaves_the_subscriber_out(hook):
    "a hard bounce from week 1's email: week 2's fan-out creates no delivery for that address, others still get it"
    engine = hook.app.state.ctx.engine
    now = datetime(2026, 11, 26, 9, tzinfo=timezone.utc)
    bouncing, staying = add_subscribers(engine, 2, prefix="bounce-test")
    add_comparison(engine, published_at=now - timedelta(days=2))
    first = open_issue(engine=engine, week="2026-W48", now=now)
    with session_scope(engine) as session:
        row = session.scalar(select(Delivery).where(Delivery.issue_id == first.issue.id,
                                                    Delivery.subscriber_id == bouncing))
        delivery = Sent(id=row.id, subscriber_id=bouncing, issue_id=row.issue_id,
                        email=session.get(Subscriber, bouncing).email)
    assert post(hook, [sg_event(delivery, "bounce", "b1", type="bounce")]).status_code == 200
    assert status_of(engine, bouncing) == "bounced"

    later = now + timedelta(days=7)
    add_comparison(engine, published_at=later - timedelta(days=1))
    second = open_issue(engine=engine, week="2026-W49", now=later)
    with session_scope(engine) as session:
        audience = set(session.scalars(select(Delivery.subscriber_id).where(Delivery.issue_id == second.issue.id)))
    assert staying in audience and bouncing not in audience
