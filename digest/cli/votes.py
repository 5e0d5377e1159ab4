"""`digest votes push`: one pass of the push of readers' votes to the site, now. The work is
digest.votes.push's; here, the settings and the words."""

from __future__ import annotations

from digest.cli.shared import console, engine_for, fail, settings_for_run, utcnow


def push() -> None:
    """Send the vote events waiting for the site to DIGEST_SITE_WEBHOOK_URL, now: one pass, as the scheduler's
    minute job does.

    Events go oldest first in signed batches of at most 500 (X-Digest-Signature, keyed with
    DIGEST_SITE_WEBHOOK_SECRET). Says how many it sent. After a failure the push waits 30 s, doubling up
    to an hour; until then this command sends nothing and says until when, and why. While the site fails, events cast
    more than 3 days ago are given up (counted as expired). Exit 1 when the site fails or is being waited
    out, 2 when no webhook is set.

    \b
    Example:
      digest votes push
    """
    from digest.votes.push import push_votes

    settings = settings_for_run(need_secrets=False)
    if not settings.site_webhook_url:
        raise fail("DIGEST_SITE_WEBHOOK_URL is not set: there is no site to push to (the site can still pull "
                   "GET /api/votes)", 2)
    done = push_votes(engine=engine_for(settings), settings=settings, now=utcnow())
    url = settings.site_webhook_url
    if done.expired:
        console.print(f"gave up {done.expired} vote events cast more than 3 days ago", highlight=False)
    if done.sent or not done.failures:
        batches = f"{done.batches} batch{'es' if done.batches != 1 else ''}"
        console.print(f"{url}: sent {done.sent} vote events in {batches}" if done.sent
                      else f"{url}: no vote events waiting", highlight=False, markup=False)
    if done.error:
        raise fail(f"{url}: {done.error}; nothing more was sent, next attempt at {_when(done.waiting_until)}")
    if done.waiting_until is not None and done.failures:
        raise fail(f"{url}: waiting until {_when(done.waiting_until)} after {done.failures} failures in a row "
                   f"since {_when(done.failing_since)} (last: {done.last_error})")
    if done.waiting_until is not None:
        console.print(f"{url}: another push is in flight until {_when(done.waiting_until)}", highlight=False,
                      markup=False)


def _when(moment) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S %Z}" if moment is not None else "?"
