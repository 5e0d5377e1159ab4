"""`digest stats`: how each issue did (digest.track.stats), as a table, JSON or a page with a chart."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from digest.cli.shared import console, engine_for, fail, settings_for_run, week_option

if TYPE_CHECKING:
    from rich.table import Table


def stats(
    week: Annotated[Optional[str], week_option("only this issue: an ISO week, e.g. 2026-W48, or a month, e.g. "
                                               "2026-M12 (default: every issue)", months=True)] = None,
    last: Annotated[int, typer.Option(metavar="N", help="the table shows this many latest issues (0: all)")] = 6,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts instead of a table (every issue)")] = False,
    html: Annotated[Optional[Path], typer.Option("--html", metavar="FILE", help="write a page with a chart of the rates over the issues to this file")] = None,
) -> None:
    """Per issue: recipients, sent, failed, delivered, bounced, human and machine opens, clickers, votes, unsubscribes.

    People are counted once per delivery (a reader who opens five times is one human opener); machine
    opens (image proxies, Apple Mail Privacy Protection, opens within seconds of the send) are kept apart
    from human ones. Rates are of delivered when the Event Webhook reported deliveries, else of sent.

    Votes are readers' standing Ship/Skip votes cast from that issue's email, voters the readers who cast
    them. A vote counts as a click for engagement: a reader who voted from the issue's email is one of its
    clickers, once, whether or not they also clicked a link.

    What SendGrid's Event Webhook reported of each issue: its events received, when the newest of them
    happened (a line under the table gives its age: far behind means the webhook lags, and bounces wait
    to be suppressed) and the emails sent that it has not yet reported delivered, bounced or dropped.
    --json gives "webhook_events", "newest_event_at", "newest_event_age_seconds" and "awaiting_outcome".

    Each issue's state is sending, paused, cancelled or done; under the table, a line per paused or cancelled
    issue says why, since when, and what to do (`digest issue resume WEEK`). --json gives "state",
    "state_reason" and "state_since" per issue.

    With DIGEST_SITE_WEBHOOK_URL set, a last line says how many vote events wait for the push to the
    site, and since when the push fails and why. --json prints {"issues": [one object per issue],
    "site_push": {"waiting", "oldest_waiting_at", "failing_since", "last_error", "expired"} or null
    when no site webhook is set}.

    Readers the sunset made dormant (silent for DIGEST_SUNSET_WEEKS, no answer to the re-permission
    email: `digest subscribers sunset`) are not sent to; a line under the table (when there are any) and
    --json's "dormant" count them.

    --html writes a self-contained page with a chart of open, click and unsubscribe rates over the
    issues (human and machine opens apart) and the table; `digest preview --serve` shows it at /stats.

    \b
    Examples:
      digest stats --week 2026-W48
      digest stats --json
      digest stats --html stats.html
    """
    import json
    from datetime import datetime, timezone

    from digest.track.stats import issue_stats, site_push_status

    settings = settings_for_run(need_secrets=False)
    engine = engine_for(settings)
    rows = issue_stats(engine=engine, week=week)
    if week and not rows:
        raise fail(f"no issue for week {week}; `digest stats` lists every issue")
    push = site_push_status(engine=engine, webhook_url=settings.site_webhook_url)
    dormant = dormant_readers(engine)
    now = datetime.now(timezone.utc)
    if as_json:
        document = {"issues": [row.as_dict(now=now) for row in rows], "site_push": push.as_dict() if push else None,
                    "dormant": dormant}
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    elif html is not None:
        from digest.track.stats_page import stats_page

        html.write_text(stats_page(rows), encoding="utf-8")
        console.print(f"wrote {html} ({len(rows)} issues): open it in a browser")
    elif not rows:
        console.print("no issues yet")
    else:
        shown = rows[:last] if last > 0 else rows
        console.print(stats_table(shown))
        for row in shown:  # why an issue is not sending, with what to do about it
            if row.state.halts:
                console.print(row.state.sentence(row.week), highlight=False, markup=False)
        for row in shown:
            if row.newest_event_at is not None:
                console.print(webhook_line(row, now), highlight=False, markup=False)
    if push is not None and not as_json and html is None:
        console.print(push_line(push), highlight=False)
    if dormant and not as_json and html is None:  # none: no line (--json always has the count)
        console.print(f"dormant readers: {dormant} (not sent to; any old link of theirs offers to resume)",
                      highlight=False)


def dormant_readers(engine) -> int:
    from storage.sunset import count_dormant

    with engine.connect() as connection:
        return count_dormant(connection=connection)


def webhook_line(row, now) -> str:
    """ "webhook 2026-W48: 2,998,417 events, the newest happened 2 min ago (09:41 UTC); 1,204 sent, no outcome yet" """
    age = row.newest_event_age(now)
    ago = f"{age:.0f} s" if age < 120 else f"{age / 60:.0f} min" if age < 7200 else f"{age / 3600:.0f} h"
    line = (f"webhook {row.week}: {row.webhook_events:,} events, the newest happened {ago} ago "
            f"({row.newest_event_at:%Y-%m-%d %H:%M} UTC)")
    if row.awaiting_outcome:
        line += f"; {row.awaiting_outcome:,} sent, no outcome yet"
    return line


def push_line(push) -> str:
    """ "site push: 12 vote events waiting (oldest 2026-11-29 10:00 UTC); failing since …: HTTP 503" """
    line = f"site push: {push.waiting} vote {'event' if push.waiting == 1 else 'events'} waiting"
    if push.oldest_waiting_at is not None:
        line += f" (oldest {push.oldest_waiting_at:%Y-%m-%d %H:%M} UTC)"
    if push.failing_since is not None:
        line += f"; failing since {push.failing_since:%Y-%m-%d %H:%M} UTC: {push.last_error or 'no error recorded'}"
    if push.expired:
        line += f"; {push.expired} expired unsent after 3 days of retries"
    return line


def stats_table(rows) -> Table:
    """One column per issue, one row per figure: readable on an 80-column terminal."""
    from rich.table import Table

    table = Table(caption="people (openers, clickers, …) are distinct deliveries; % is of the base row "
                          "(bounced: of sent); machine-only: opened only by image proxies or privacy prefetch")
    table.add_column("figure")
    for row in rows:
        table.add_column(row.week, justify="right", no_wrap=True)
    for label, cell in FIGURES.items():
        table.add_row(label, *(cell(row) for row in rows))
    return table


def pct(rate: float | None) -> str:
    return "" if rate is None else f" · {rate:.1%}"


# The table's rows, top to bottom: a label and how one issue's cell reads.
FIGURES = {
    "state": lambda r: r.state.name,
    "recipients": lambda r: str(r.recipients),
    "sent": lambda r: str(r.sent),
    "failed": lambda r: str(r.failed),
    "delivered": lambda r: str(r.delivered),
    "bounced (hard)": lambda r: f"{r.bounced}{pct(r.rates['bounce'])}",
    "human openers": lambda r: f"{r.human_openers}{pct(r.rates['open'])}",
    "machine-only openers": lambda r: f"{r.machine_only_openers}{pct(r.rates['machine_only_open'])}",
    "opens, all (machine)": lambda r: f"{r.opens} ({r.machine_opens})",
    "clickers (incl. voters)": lambda r: f"{r.clickers}{pct(r.rates['click'])}",
    "votes": lambda r: str(r.votes),
    "voters": lambda r: f"{r.voters}{pct(r.rates['vote'])}",
    "unsubscribes": lambda r: f"{r.unsubscribes}{pct(r.rates['unsubscribe'])}",
    "complaints": lambda r: f"{r.complaints}{pct(r.rates['complaint'])}",
    "webhook events": lambda r: str(r.webhook_events),
    "sent, no outcome yet": lambda r: "" if r.awaiting_outcome is None else str(r.awaiting_outcome),
    "% base": lambda r: r.rate_base,
}
