"""`POST /webhooks/sendgrid`: SendGrid's signed Event Webhook (the signature and the event format:
digest.transports.sendgrid_events). Verify, read, apply (digest.track.events).

Answers: 200 {"applied", "duplicates", "ignored"} once the post's events are committed; 403 for any
signature or timestamp problem (the same answer whatever was wrong); 503 when no key is configured (a 5xx
makes SendGrid retry, so events wait for the key instead of being lost); 503 with Retry-After when the
store cannot take the post within DIGEST_WEBHOOK_BUSY_SECONDS or is unavailable (digest.web.webhook_store);
400 for a signed body that is not a JSON array of objects. A body past 5 MB never gets here:
`digest.web.limits` answers 413 while it streams, before any signature check.
"""

from __future__ import annotations

import logging
from datetime import datetime

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from digest.track.events import WebhookSummary, apply_provider_events
from digest.track.guardrail import check_issues
from digest.transports import make_transport
from digest.transports.sendgrid_events import Refused, event_items, key_usable, read_events, verified_body
from digest.web.context import WebContext, get_context
from digest.web.webhook_store import RETRY_AFTER_SECONDS, StoreBusy, WebhookStore

router = APIRouter()
log = logging.getLogger("digest.web")


def _forbidden() -> JSONResponse:
    return JSONResponse({"error": "signature or timestamp not accepted"}, status_code=403)


@router.post("/webhooks/sendgrid", include_in_schema=False)
async def sendgrid_events(request: Request, ctx: WebContext = Depends(get_context)) -> JSONResponse:
    public_key = ctx.settings.sendgrid_webhook_public_key.strip()
    if not public_key:
        log.error("SendGrid webhook post refused: DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY is not set "
                  "(Mail Settings → Signed Event Webhook in SendGrid shows it)")
        return JSONResponse({"error": "webhook verification key not configured"}, status_code=503)
    if not key_usable(public_key):
        log.error("SendGrid webhook post refused: DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY is not a base64 DER public key")
        return JSONResponse({"error": "webhook verification key unusable"}, status_code=503)

    store = ctx.webhook_store()
    if not store.admit():
        return _busy()
    try:
        return await _receive(request, ctx, public_key, store)
    finally:
        store.leave()


def _busy() -> JSONResponse:
    return JSONResponse({"error": "the store is busy: try again later"}, status_code=503,
                        headers={"Retry-After": str(RETRY_AFTER_SECONDS)})


async def _receive(request: Request, ctx: WebContext, public_key: str, store: WebhookStore) -> JSONResponse:
    raw = await request.body()  # at most limits.WEBHOOK.bytes: BodyLimits cut off anything longer
    try:
        body = verified_body(public_key=public_key, headers=request.headers, raw=raw, now=ctx.clock().timestamp(),
                             max_age=ctx.settings.webhook_max_age_seconds)
    except Refused as refused:
        if refused.reason is not None:
            log.warning("SendGrid webhook post refused: %s", refused.reason)
        return _forbidden()

    items = event_items(body)
    if items is None:
        return JSONResponse({"error": "expected a JSON array of event objects"}, status_code=400)
    # The store is synchronous, and reading the events is per-event work too: both off the event loop.
    try:
        summary = await store.apply(_apply, ctx, items, ctx.clock())
    except StoreBusy:
        return _busy()
    return JSONResponse({"applied": summary.applied, "duplicates": summary.duplicates, "ignored": summary.ignored})


def _apply(ctx: WebContext, items: list[dict], now: datetime) -> WebhookSummary:
    summary = apply_provider_events(engine=ctx.engine, events=read_events(items, now=now), now=now)
    # The guardrail, once the events are committed, on the issues they moved: it may pause a send going wrong.
    check_issues(engine=ctx.engine, settings=ctx.settings, issue_ids=summary.reports, now=now,
                 transport_for=lambda: make_transport(ctx.settings))
    return summary
