"""`POST /webhooks/sendgrid`: SendGrid's signed Event Webhook.

Trust nothing unsigned: the body must carry a valid ECDSA signature (P-256, SHA-256 over timestamp +
raw body) under the public key SendGrid shows (DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY), and a timestamp of
the last 10 minutes, so a captured post cannot be replayed later. Within that window a replay changes
nothing either: each event is recorded once by its sg_event_id.

Answers: 200 {"applied", "duplicates", "ignored"}; 403 for any signature or timestamp problem (the same
answer whatever was wrong); 503 when no key is configured (a 5xx makes SendGrid retry, so events wait
for the key instead of being lost); 400 for a signed body that is not a JSON array of objects. A body
past 5 MB never gets here: `digest.web.limits` answers 413 while it streams, before any signature check.
"""

from __future__ import annotations

import binascii
import json
import logging
from functools import lru_cache

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from sendgrid import EventWebhook

from digest.track.tracking import apply_provider_events
from digest.web.context import WebContext, get_context

router = APIRouter()
log = logging.getLogger("digest.web")

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
MAX_FUTURE_SECONDS = 300  # clock skew we tolerate between SendGrid and us


@lru_cache(maxsize=4)
def _verifier(public_key: str) -> EventWebhook:
    return EventWebhook(public_key)  # parses the key once per key, not once per post


def signature_ok(*, public_key: str, body: str, signature: str, timestamp: str) -> bool:
    try:
        return _verifier(public_key).verify_signature(body, signature, timestamp)
    except (ValueError, TypeError, binascii.Error):  # undecodable signature or malformed DER
        return False


def _forbidden() -> JSONResponse:
    return JSONResponse({"error": "signature or timestamp not accepted"}, status_code=403)


@router.post("/webhooks/sendgrid", include_in_schema=False)
async def sendgrid_events(request: Request, ctx: WebContext = Depends(get_context)) -> JSONResponse:
    public_key = ctx.settings.sendgrid_webhook_public_key.strip()
    if not public_key:
        log.error("SendGrid webhook post refused: DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY is not set "
                  "(Mail Settings → Signed Event Webhook in SendGrid shows it)")
        return JSONResponse({"error": "webhook verification key not configured"}, status_code=503)
    try:
        _verifier(public_key)
    except ValueError:
        log.error("SendGrid webhook post refused: DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY is not a base64 DER public key")
        return JSONResponse({"error": "webhook verification key unusable"}, status_code=503)

    signature = request.headers.get(SIGNATURE_HEADER, "")
    timestamp = request.headers.get(TIMESTAMP_HEADER, "")
    raw = await request.body()  # at most limits.WEBHOOK.bytes: BodyLimits cut off anything longer
    try:
        body = raw.decode("utf-8")
    except UnicodeDecodeError:
        return _forbidden()
    if not signature or not _fresh(timestamp, ctx.clock().timestamp(), ctx.settings.webhook_max_age_seconds):
        log.warning("SendGrid webhook post refused: missing signature or stale timestamp %r", timestamp[:20])
        return _forbidden()
    if not signature_ok(public_key=public_key, body=body, signature=signature, timestamp=timestamp):
        log.warning("SendGrid webhook post refused: bad signature")
        return _forbidden()

    try:
        events = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: arrays nested ~1,000 deep
        events = None
    if not isinstance(events, list) or not all(isinstance(item, dict) for item in events):
        return JSONResponse({"error": "expected a JSON array of event objects"}, status_code=400)
    # The store is synchronous: keep it off the event loop.
    summary = await run_in_threadpool(apply_provider_events, engine=ctx.engine, events=events, now=ctx.clock())
    return JSONResponse({"applied": summary.applied, "duplicates": summary.duplicates, "ignored": summary.ignored})


def _fresh(timestamp: str, now: float, max_age: int) -> bool:
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    return now - max_age <= sent <= now + MAX_FUTURE_SECONDS

