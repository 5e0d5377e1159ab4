"""The site push (issue 17, item 4): readers' vote events POSTed to DIGEST_SITE_WEBHOOK_URL, signed.

The outbox is ``vote_event`` itself: events after ``site_push.pushed_through`` wait (storage.site_push).
One pass (`push_votes`, from the scheduler's minute job and `digest votes push`) sends as many batches as
are due, oldest first, each of at most 500 events as ``{"events": [...]}`` in the pull API's shape
(`digest.votes.casting.event_json`), with ``X-Digest-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<body>">`` keyed with DIGEST_SITE_WEBHOOK_SECRET. A 2xx moves the cursor past the batch. Anything
else — unreachable, no answer within DIGEST_SITE_WEBHOOK_TIMEOUT, a non-2xx, a redirect (never followed:
the signed votes go to the configured URL or nowhere) — moves nothing, and the next attempt waits 30 s,
doubling up to an hour. While the site fails, events cast more than 3 days ago are given up (counted in
``site_push.expired``, one warning). So a site down for a day gets every event, once per id, in order.

Each attempt is claimed in the database before its POST, so two schedulers never send the same batch.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from digest.outbound import NO_ANSWER, no_answer
from digest.votes.casting import event_json
from storage.db import session_scope
from storage.site_push import (
    claim,
    expire_older,
    push_state,
    record_failure,
    record_sent,
    waiting_events,
)

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from digest.config import Settings

log = logging.getLogger("digest.votes.push")

BATCH = 500  # events per POST: ~100 KB of JSON, well inside what any web framework reads by default
GIVE_UP_AFTER = timedelta(days=3)  # the push retries this long; the site can still pull older events
FIRST_WAIT = 30.0  # seconds after the first failure; doubled after each one in a row
LONGEST_WAIT = 3600.0  # an hour: a site back up hears from us within the hour
JITTER = 0.1  # up to 10 % off each wait, so two schedulers' retries drift apart
CLAIM_MARGIN = timedelta(seconds=60)  # a claim outlives its POST's timeout by this much
USER_AGENT = "weekly-verdicts-digest (vote push)"

Post = Callable[[str, bytes, dict[str, str], float], None]


class PushFailed(Exception):
    """The site did not take a batch; the message is one line ("answered HTTP 503 Service Unavailable")."""


@dataclass
class PushPass:
    """What one pass did: events sent in how many batches, given up, or why it stopped."""

    sent: int = 0
    batches: int = 0
    expired: int = 0
    error: str | None = None  # the site failed in this pass
    waiting_until: datetime | None = None  # not due yet (a backoff, or another process's push in flight)
    failures: int = 0  # in a row, this pass's included
    failing_since: datetime | None = None
    last_error: str | None = None


def signature(*, secret: bytes, body: bytes, t: int) -> str:
    """The X-Digest-Signature of ``body`` sent at unix time ``t``: over the exact bytes sent."""
    return f"t={t},v1={hmac.new(secret, str(t).encode() + b'.' + body, hashlib.sha256).hexdigest()}"


def wait_after(failures: int, *, jitter: float) -> timedelta:
    """How long to wait after ``failures`` in a row: 30 s, 60 s, 120 s … at most an hour, less ``jitter``
    (0 to 1) of a tenth."""
    seconds = min(FIRST_WAIT * 2 ** min(failures - 1, 20), LONGEST_WAIT)
    return timedelta(seconds=seconds * (1 - JITTER * jitter))


def push_votes(*, engine: Engine, settings: Settings, now: datetime, post: Post | None = None,
               jitter: Callable[[], float] = random.random) -> PushPass:
    """One pass: every batch that is due, until none waits, the site fails or the attempt is not due."""
    url = settings.site_webhook_url
    if not url:
        raise ValueError("DIGEST_SITE_WEBHOOK_URL is not set: there is no site to push to")
    secret = settings.site_webhook_secret.get_secret_value().encode()
    send = post or post_json
    done = PushPass()
    while _one_batch(engine=engine, url=url, secret=secret, timeout=settings.site_webhook_timeout, now=now,
                     post=send, jitter=jitter, done=done):
        pass
    return done


def _one_batch(*, engine, url, secret, timeout, now, post, jitter, done: PushPass) -> bool:
    """Claim, send and record one batch into ``done``; True when another may follow in this pass."""
    claimed = _claim_batch(engine=engine, url=url, now=now, until=now + timedelta(seconds=timeout) + CLAIM_MARGIN,
                           done=done)
    if claimed is None:
        return False
    events, failures = claimed
    body = json.dumps({"events": [event_json(event) for event in events]}, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               "X-Digest-Signature": signature(secret=secret, body=body, t=int(now.timestamp()))}
    try:
        post(url, body, headers, timeout)
    except PushFailed as exc:
        with session_scope(engine) as session:
            state = record_failure(session=session, at=now, error=str(exc),
                                   next_attempt_at=now + wait_after(failures + 1, jitter=jitter()))
            _note_state(done, state)
        done.error = str(exc)
        log.warning("site push %s: %s; %d vote events not sent, failure %d in a row, next attempt at %s", url,
                    exc, len(events), done.failures, f"{done.waiting_until:%Y-%m-%d %H:%M:%S %Z}")
        return False
    with session_scope(engine) as session:
        record_sent(session=session, through=events[-1].id)
    done.sent, done.batches = done.sent + len(events), done.batches + 1
    done.failures, done.failing_since, done.last_error = 0, None, None
    return len(events) == BATCH


def _claim_batch(*, engine, url, now, until, done: PushPass):
    """The next batch and the failures so far, claimed until ``until`` (the expired given up first);
    None when the attempt is not due or nothing waits."""
    with session_scope(engine) as session:
        if not claim(session=session, now=now, until=until):
            _note_state(done, push_state(session=session), waiting=True)
            return None
        state = push_state(session=session)
        if state.failing_since is not None:
            expired, _ = expire_older(session=session, before=now - GIVE_UP_AFTER)
            if expired:
                done.expired += expired
                log.warning("site push %s: gave up %d vote events cast before %s: the site has failed since %s "
                            "(%s)", url, expired, f"{now - GIVE_UP_AFTER:%Y-%m-%d %H:%M %Z}",
                            f"{state.failing_since:%Y-%m-%d %H:%M %Z}", state.last_error)
        events = waiting_events(session=session, after=state.pushed_through, limit=BATCH)
        if not events:
            state.next_attempt_at = None  # nothing to send: the next pass is due at once
            _note_state(done, state)
            return None
        return events, state.failures


def _note_state(done: PushPass, state, *, waiting: bool = False) -> None:
    done.failures, done.failing_since, done.last_error = state.failures, state.failing_since, state.last_error
    if waiting or state.failures:
        done.waiting_until = state.next_attempt_at


# -- HTTP -----------------------------------------------------------------------------------------------

class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is answered as it is (an HTTPError): signed votes go to the configured URL or nowhere."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def post_json(url: str, body: bytes, headers: dict[str, str], timeout: float) -> None:
    """POST ``body`` to ``url``, given up after ``timeout`` seconds; raises PushFailed unless the answer is 2xx."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            response.read(64 * 1024)  # the site's answer is not used; read a little so the connection ends cleanly
    except urllib.error.HTTPError as exc:
        exc.close()
        if 300 <= exc.code < 400:
            raise PushFailed(f"answered HTTP {exc.code} {exc.reason}, a redirect to {exc.headers.get('Location')}: "
                             "redirects are not followed; set DIGEST_SITE_WEBHOOK_URL to the address it names") from None
        raise PushFailed(f"answered HTTP {exc.code} {exc.reason}") from None
    except NO_ANSWER as exc:
        raise PushFailed(no_answer(exc, timeout=timeout)) from None
