"""`digest send` (and its --dry-run and --test-to) and `digest worker`: the weekly run and the send loop of
digest.weekly, digest.send and digest.editor, with their reports printed by digest.cli.reporting."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from digest.cli.shared import console, errors, fail, progress_shown, reports_template_errors, settings_for_run, utcnow, week_option

if TYPE_CHECKING:
    from datetime import datetime

    from digest.config import Settings


@reports_template_errors
def send(
    week: Annotated[Optional[str], week_option("ISO week to send, e.g. 2026-W48 (default: this week)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show who would get what, and who gets nothing and why; send and write nothing")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="with --dry-run: print JSON for scripts, naming everyone who gets nothing")] = False,
    test_to: Annotated[Optional[str], typer.Option("--test-to", metavar="EMAIL,…", help="send the issue only to these comma-separated addresses, marked as a test")] = None,
    as_email: Annotated[Optional[str], typer.Option("--as", metavar="EMAIL", help="with --test-to: the segment this subscriber gets (default: all categories)")] = None,
) -> None:
    """Open and send this week's issue (or --week), or resume one that was interrupted.

    The issue claims every comparison published and not yet in an issue. Safe to rerun: nobody gets
    the same issue twice (see docs/sending.md for the one ambiguous case). Nothing new to send is
    not an error.

    --dry-run lists the comparisons the issue claims, its segments and their sizes, then the first 50
    people who get nothing with the reason (no matching category, pending confirmation, paused,
    unsubscribed, bounced, complained, reads the monthly email) and the count per reason; with --json,
    everyone. An issue that already went out is only described. Then the monthly email: on its day (the
    schedule's first in the month) how many monthly readers get it, in how many segments, covering which
    weekly issues; on other days, when the next one goes and to how many monthly readers.

    A paused issue is not sent: `digest send` says why it is paused and exits 1 (`digest issue resume WEEK` lifts
    the pause; the next `digest send` sends the rest); a cancelled one is never sent again. A pause while it
    sends stops it after the batch in flight. --dry-run says so too, and what resuming would send.

    --test-to sends the real rendered issue to those addresses only, through the configured transport,
    with "[TEST]" in the subject; it opens no issue and touches no delivery or statistic.

    With DIGEST_COMPARISONS_FEED_URL set, a send pulls it first (a failure is a warning; the send goes
    on); --dry-run pulls nothing and says when the feed last answered and what it brought.

    \b
    Examples:
      digest send --dry-run
      digest send --test-to me@example.com
      digest send
    """
    if as_json and not dry_run:
        raise fail("--json goes with --dry-run: digest send --dry-run --json", 2)
    settings = settings_for_run(need_secrets=not dry_run)
    if not dry_run:
        refuse_unsafe_links(settings)  # before the feed, the issue or a claim
    now = utcnow()
    if test_to:
        _test_send(settings, week=week, now=now, addresses=test_to, as_email=as_email)
    elif dry_run:
        _dry_run(settings, week=week, now=now, as_json=as_json)
    else:
        _send(settings, week=week, now=now)


def _send(settings: Settings, *, week: str | None, now: datetime) -> None:
    """The feed pulled, then the weekly run for ``week`` (default: this week, opened now even before its slot);
    exit 1 on failures."""
    from digest.claim.weeks import iso_week
    from digest.cli.reporting import print_run
    from digest.send.loop import SendAborted, Sender
    from digest.services import build_services, settle_heap
    from digest.weekly import run

    services = build_services(settings)
    sender = Sender(services=services, progress=progress_shown(settings))
    settle_heap()
    pulled = None
    if settings.comparisons_feed_url:  # the importers (and jsonschema) load only for a feed: 0.3 s of every send
        from digest.importing.feed import pull_configured

        pulled = pull_configured(services=services, now=now)  # a failure is logged: a warning on stderr
    if pulled is not None:
        console.print(f"feed {pulled.url}: {pulled.summary()}", highlight=False, markup=False)
    try:
        result = run(services=services, sender=sender, now=now, week=week or iso_week(now.astimezone(settings.tz)))
    except SendAborted as exc:
        print_run(console, None, [exc.report])
        raise fail(str(exc))
    print_run(console, result, result.reports)
    # Exit 1 when a recipient failed, or the week asked is paused or cancelled (print_run said why).
    if any(report.failed for report in result.reports) or result.week in result.held:
        raise typer.Exit(1)


def _dry_run(settings: Settings, *, week: str | None, now: datetime, as_json: bool) -> None:
    """Who would get what: a table and the first people left out, or with ``as_json`` everyone, as JSON."""
    from digest.cli.reporting import print_dry_run
    from digest.editor.dry_run import LISTED, dry_run
    from digest.services import build_services

    found = dry_run(services=build_services(settings), week=week, now=now, limit=None if as_json else LISTED)
    if as_json:
        import json

        sys.stdout.write(json.dumps(found.as_dict(tz=settings.tz), indent=2, ensure_ascii=False) + "\n")
    else:
        print_dry_run(console, found, tz=settings.tz)
        if found.monthly is not None:  # the monthly email (issue 19): its audience on its day, else when it goes
            console.print(found.monthly.sentence(tz=settings.tz), highlight=False, markup=False)


def _test_send(settings: Settings, *, week: str | None, now: datetime, addresses: str, as_email: str | None) -> None:
    from digest.editor.preview import NothingToPreview, render_for, test_send
    from digest.services import build_services
    from digest.transports import PermanentError, TransientError

    emails = _test_addresses(addresses)
    services = build_services(settings)
    try:
        rendered = render_for(services=services, week=week, now=now, as_email=as_email)
        count = test_send(services=services, rendered=rendered, addresses=emails)
    except NothingToPreview as exc:
        raise fail(str(exc))
    except (PermanentError, TransientError) as exc:
        raise fail(f"the test send failed: {exc}")
    where = f" (outbox: {settings.outbox_dir})" if settings.transport == "outbox" else ""
    console.print(f"test send of issue {rendered.week} as {rendered.reader} to {count} address(es){where}")


def refuse_unsafe_links(settings: Settings) -> None:
    """A real SendGrid send with links readers cannot safely follow (digest.transports.safe_links): one line, exit 2."""
    from digest.transports.safe_links import UnsafeLinks, refuse_unsafe_links as refuse

    try:
        refuse(settings)
    except UnsafeLinks as exc:
        raise fail(str(exc), 2) from None


def _test_addresses(addresses: str) -> list[str]:
    """--test-to's comma-separated addresses, normalized; a bad one or none at all is exit 2."""
    from digest.importing import InvalidAddress, normalize_address

    try:
        emails = [normalize_address(a.strip()).email for a in addresses.split(",") if a.strip()]
    except InvalidAddress as exc:
        raise fail(str(exc), 2)
    if not emails:
        raise fail("--test-to needs at least one address", 2)
    return emails


def worker(
    batch_size: Annotated[Optional[int], typer.Option(min=1, max=1000, metavar="N", help="recipients per request (default: DIGEST_BATCH_SIZE, 1000)")] = None,
    once: Annotated[bool, typer.Option("--once", help="send what can be taken now, then exit (for a timer or a test)")] = False,
) -> None:
    """Send the pending deliveries of every unfinished issue; run as many as you like, side by side.

    Workers open no issue (the scheduler does). They lease batches with FOR UPDATE SKIP LOCKED, so any
    number of them (and of schedulers) share one PostgreSQL database without sending anyone the issue
    twice; a worker that dies loses its batch to the others when its lease (DIGEST_LEASE_SECONDS) ends.
    A 429 from SendGrid makes every worker wait. SIGTERM: finish the batch in flight, then exit.

    \b
    Example:
      digest worker --batch-size 1000
    """
    import logging
    import signal

    from digest.send.loop import Sender
    from digest.send.worker import Worker
    from digest.services import build_services, settle_heap

    settings = settings_for_run()
    refuse_unsafe_links(settings)
    if batch_size is not None:
        settings.batch_size = batch_size
    progress = _log_progress(settings)
    services = build_services(settings)
    runner = Worker(services=services, sender=Sender(services=services, progress=progress),
                    idle_seconds=settings.worker_idle_seconds)
    settle_heap()
    logging.getLogger("digest.worker").info("worker started: batches of %d, lease %.0f s%s", settings.batch_size,
                                            settings.lease_seconds, ", once" if once else "")
    signal.signal(signal.SIGTERM, runner.stop)
    signal.signal(signal.SIGINT, runner.stop)
    _print_worker_report(runner.run(once=once))


def _log_progress(settings: Settings):
    """A worker logs, timestamped, and its progress is log lines too."""
    import logging

    from digest.progress import CurrentStderr

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=CurrentStderr())  # above the progress bar on a terminal, not through it
    return progress_shown(settings, write=logging.getLogger("digest.progress").info)  # log lines, timestamped


def _print_worker_report(report) -> None:
    """What the worker did, on stdout; its errors on stderr; exit 1 when any recipient failed."""
    console.print(f"worker: sent {report.sent} in {report.batches} batches, failed {report.failed}, "
                  f"{report.ambiguous} possible duplicates, {report.rate_limited} rate limited, "
                  f"{report.shared_waits} shared waits")
    for line in report.errors:
        errors.print(line, highlight=False, markup=False)
    if report.failed:
        raise typer.Exit(1)
