"""The clock of the weekly digest: `python scheduler.py`.

APScheduler 3.11 wiring only. A cron trigger from DIGEST_SEND_SCHEDULE in DIGEST_TIMEZONE, plus a
catch-up run at start and every hour, all calling the same idempotent `digest.weekly.run`; with
DIGEST_SITE_WEBHOOK_URL set, the push of readers' votes to the site every minute (`digest.votes.push`,
which claims each attempt in the database, so several schedulers never send a batch twice); and once a day
the sunset (`digest.subscribers.sunset`: silent readers asked once, the unanswered made dormant). The scheduler
keeps no job store of its own (APScheduler's FAQ: a job store cannot be shared between processes), so
any number of scheduler processes may run against one database: the unique issue per week and the
unique delivery per subscriber make sure one issue goes out, once per subscriber.
"""

from __future__ import annotations

import logging
import signal
import sys

from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.interval import IntervalTrigger
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from digest.send.loop import Sender
    from digest.services import Services

log = logging.getLogger("digest.scheduler")

CATCH_UP_EVERY_HOURS = 1  # a send interrupted by a crash or an outage resumes within the hour
SITE_PUSH_EVERY_MINUTES = 1  # a vote reaches the site within a minute; the push's own backoff spaces retries
SUNSET_AT = "30 4 * * *"  # daily, 04:30 local: the sunset counts in weeks and days, and runs away from most sends


def weekly_job(services: Services, sender: Sender) -> bool:
    """One tick: pull the comparison feed (DIGEST_COMPARISONS_FEED_URL, when set), resume what is unfinished,
    open and send this week's issue when due.

    Never raises (the scheduler must keep its next appointment); returns False when the tick failed. A feed
    that fails is one log line and not a failed tick: the run goes on with what the store holds.
    """
    from digest.importing.feed import pull_configured
    from digest.send.loop import SendAborted
    from digest.weekly import run
    from storage.types import utcnow

    pull_configured(services=services, now=utcnow())
    try:
        result = run(services=services, sender=sender, now=utcnow())
    except SendAborted as exc:
        log.error("%s", exc)
        return False
    except Exception:
        log.exception("weekly run failed; the next tick retries")
        return False
    if result.reason:
        log.info("%s", result.reason)
    for report in result.reports:
        log.info("issue %s: sent %d, failed %d, left %d, %d possible duplicates, %.1f s",
                 report.week, report.sent, report.failed, report.remaining, report.ambiguous, report.seconds)
        if report.timing():
            log.info("issue %s: %s", report.week, report.timing())
    return all(report.failed == 0 for report in result.reports)


def site_push_job(services: Services) -> bool:
    """One pass of the vote push to DIGEST_SITE_WEBHOOK_URL (digest.votes.push): every batch that is due.

    Never raises; returns False when the site or the store failed. A failing site is one warning from the
    push itself, and its next attempt waits out the backoff however often this job runs.
    """
    from digest.votes.push import push_votes
    from storage.types import utcnow

    try:
        done = push_votes(engine=services.engine, settings=services.settings, now=utcnow())
    except Exception:
        log.exception("vote push to the site failed; the next minute retries")
        return False
    if done.sent:
        log.info("vote push: sent %d vote events in %d batches", done.sent, done.batches)
    return done.error is None


def sunset_job(services: Services) -> bool:
    """One pass of the sunset (digest.subscribers.sunset): the unanswered made dormant, the silent asked.

    Never raises; returns False when the store or the provider failed (the readers not asked are asked on
    the next day's pass).
    """
    from digest.subscribers.sunset import sunset
    from storage.types import utcnow

    try:
        report = sunset(services=services, now=utcnow())
    except Exception:
        log.exception("sunset failed; tomorrow's pass retries")
        return False
    log.info("sunset: %d readers asked whether they still want the verdicts, %d went dormant",
             report.asked, report.dormant)
    if report.error:
        log.error("sunset: asking stopped early: %s", report.error)
    return report.error is None


def build_scheduler(services: Services, sender: Sender) -> BlockingScheduler:
    from digest.claim.weeks import cron_trigger

    settings = services.settings
    scheduler = BlockingScheduler(timezone=settings.tz)
    # coalesce + max_instances=1: a tick that comes while the last one still runs is skipped, not queued.
    common = dict(args=[services, sender], coalesce=True, max_instances=1, misfire_grace_time=3600)
    scheduler.add_job(weekly_job, cron_trigger(settings.send_schedule, settings.tz), id="weekly", **common)
    scheduler.add_job(weekly_job, IntervalTrigger(hours=CATCH_UP_EVERY_HOURS, timezone=settings.tz),
                      id="catch-up", **common)
    scheduler.add_job(sunset_job, cron_trigger(SUNSET_AT, settings.tz), id="sunset", args=[services], coalesce=True,
                      max_instances=1, misfire_grace_time=3600)
    if settings.site_webhook_url:
        scheduler.add_job(site_push_job, IntervalTrigger(minutes=SITE_PUSH_EVERY_MINUTES, timezone=settings.tz),
                          id="site-push", args=[services], coalesce=True, max_instances=1, misfire_grace_time=60)
    return scheduler


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python scheduler.py",
        description="Run the weekly digest on DIGEST_SEND_SCHEDULE in DIGEST_TIMEZONE, with a catch-up at "
        "start and every hour. Any number of schedulers may share one database.",
    )
    parser.add_argument("--once", action="store_true",
                        help="run one catch-up tick and exit (for cron or a process manager's timer)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = checked_settings()
    if settings is None:
        return 2
    services, sender = wired(settings)
    if args.once:
        return 0 if weekly_job(services, sender) else 1
    scheduler = build_scheduler(services, sender)
    signal.signal(signal.SIGTERM, lambda *_: scheduler.shutdown(wait=False))
    log.info("schedule %r in %s; catch-up now and every %d h", settings.send_schedule, settings.timezone,
             CATCH_UP_EVERY_HOURS)
    weekly_job(services, sender)  # the catch-up at start
    try:
        scheduler.start()
    except (KeyboardInterrupt, SystemExit):
        pass
    return 0


def checked_settings():
    """The settings, the schedule and the store checked at start; None (the error printed) when one is unusable."""
    from digest.claim.weeks import cron_trigger
    from digest.config import ConfigError, Settings
    from digest.transports.safe_links import refuse_unsafe_links
    from storage.migrate import StoreUnusable, ready

    try:
        settings = Settings()
        settings.check_secrets()
        refuse_unsafe_links(settings)  # a real send's links must be https:// and public (digest.transports.safe_links)
        cron_trigger(settings.send_schedule, settings.tz)
        note = ready(settings.database_url)  # the start-up check every entry point makes (storage.migrate)
    except (ConfigError, ValueError, StoreUnusable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    if note:
        print(note, file=sys.stderr)
    return settings


def wired(settings) -> tuple[Services, Sender]:
    """The services and the send loop, built once; the heap settled (digest.services.settle_heap)."""
    from digest.progress import LogProgress
    from digest.send.loop import Sender
    from digest.services import build_services, settle_heap

    # A send's progress in the scheduler's log every DIGEST_PROGRESS_SECONDS: a daemon has no terminal for a bar.
    progress = LogProgress(write=logging.getLogger("digest.progress").info, interval=settings.progress_seconds)
    services = build_services(settings)
    sender = Sender(services=services, progress=progress)
    settle_heap()
    return services, sender


if __name__ == "__main__":
    sys.exit(main())
