"""The `digest` command: a thin layer over the library. Each command's docstring is its --help."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

# Only typer and rich at import time: `digest --help` must answer at once (issue 14: 2 s with the store,
# pydantic and the web stack imported here). Each command imports what it uses; tests/test_cli_help.py checks.
import typer
from rich.console import Console
from rich.markup import escape

from digest.cli.help import Typer

if TYPE_CHECKING:
    from digest.config import Settings

app = Typer(help="Weekly AI Tool Verdicts: claim, render and send the weekly digest.",
            no_args_is_help=True, pretty_exceptions_enable=False)
db_app = Typer(help="Create or upgrade the database.", no_args_is_help=True)
comparisons_app = Typer(help="Import the comparisons the site published.", no_args_is_help=True)
subscribers_app = Typer(help="Add and import subscribers.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(comparisons_app, name="comparisons")
app.add_typer(subscribers_app, name="subscribers")

console = Console(soft_wrap=True)  # paths and URLs stay whole, copyable
errors = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    # escaped: a message quotes what a file or a person wrote, and "[/x]" in it would be read as markup
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(code)


def _checked_week(value: Optional[str]) -> Optional[str]:
    """--week as the store names weeks ("2026-w9" is 2026-W09); "banana" or 2026-W54 is one line, exit 2."""
    if value is None:
        return None
    from digest.claim.weeks import BadWeek, parse_week

    try:
        return parse_week(value, today=utcnow().date())
    except BadWeek as exc:
        raise fail(exc.for_option(), 2)


def reports_template_errors(command):
    """A template that fails to render is one line, "templates/email/digest.mjml.j2:12: message", exit 2."""
    import functools

    @functools.wraps(command)
    def checked(*args, **kwargs):
        from digest.render.environment import RenderError

        try:
            return command(*args, **kwargs)
        except RenderError as exc:
            from digest.render.template_errors import template_error

            raise fail(template_error(exc), 2) from None

    return checked


def week_option(help: str):
    """The --week option of every command that takes one: checked before the command runs."""
    return typer.Option("--week", help=help, callback=_checked_week)


def utcnow():
    from storage.types import utcnow

    return utcnow()


def settings_for_run(*, need_secrets: bool = True, store: bool = True) -> Settings:
    """The settings of a command; with ``store`` (every command that opens the database) it is checked too."""
    from digest.config import ConfigError, Settings

    try:
        settings = Settings()
        if need_secrets:
            settings.check_secrets()
    except ConfigError as exc:
        raise fail(str(exc), 2)
    except ValueError as exc:  # pydantic's validation error names the setting
        raise fail(f"bad setting: {exc}", 2)
    if store:
        check_store(settings)
    return settings


def check_store(settings: Settings, *, upgrading: bool = False) -> str | None:
    """storage.migrate.ready: a missing SQLite file is created (said on stderr); anything else unusable is
    one line and exit 2, before the command does anything."""
    from storage.migrate import StoreUnusable, ready

    try:
        note = ready(settings.database_url, upgrading=upgrading)
    except StoreUnusable as exc:
        raise fail(str(exc), 2) from None
    if note and not upgrading:
        errors.print(note, highlight=False, markup=False, soft_wrap=True)
    return note


def engine_for(settings: Settings):
    from storage.db import make_engine

    return make_engine(settings.database_url)


# -- db -----------------------------------------------------------------------------------------------

@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create the database, or bring it to the latest schema (DIGEST_DATABASE_URL).

    \b
    Examples:
      digest db upgrade
      DIGEST_DATABASE_URL=postgresql+psycopg://db/digest digest db upgrade
    """
    from storage.faults import shown_url
    from storage.migrate import head

    settings = settings_for_run(need_secrets=False, store=False)
    note = check_store(settings, upgrading=True)
    console.print(note or f"database at {shown_url(settings.database_url)}: at revision {head()}, nothing to do")


# -- comparisons ---------------------------------------------------------------------------------------

@comparisons_app.command("import")
def comparisons_import(file: Annotated[Path, typer.Argument(metavar="FILE", help="JSON file in the comparison import format")]) -> None:
    """Import comparisons (upsert by slug). A bad file is rejected whole, naming the item and field.

    Afterwards, warns about categories in the store that the contract refuses (a `;`, `,` or line break,
    from imports before it forbade them): nobody can follow those on their own until they are imported
    again with a good name.

    \b
    Example:
      digest comparisons import published.json
    """
    from digest.importing import InvalidImport, import_comparisons
    from digest.importing.comparisons import refused_categories
    from digest.quoting import quoted

    settings = settings_for_run(need_secrets=False)
    engine = engine_for(settings)
    try:
        result = import_comparisons(engine=engine, path=file, now=utcnow(), progress=progress_shown(settings))
    except InvalidImport as exc:
        raise fail(f"{exc}\nnothing was imported")
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror or exc}")
    console.print(f"{file}: {result.created} new, {result.updated} updated, {result.unchanged} unchanged")
    refused = refused_categories(engine)
    if refused:
        names = ", ".join(f"{quoted(name, 60)} ({count})" for name, count in sorted(refused.items()))
        errors.print(f"warning: comparisons in the store are filed under categories the contract refuses: {names}. "
                     "Nobody can follow these on their own (readers of every category still get them): import "
                     "those comparisons again with the category renamed.", highlight=False, markup=False, soft_wrap=True)


# -- subscribers ---------------------------------------------------------------------------------------

@subscribers_app.command("add")
def subscribers_add(
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="the subscriber's address")],
    name: Annotated[str, typer.Option(help="how to greet them")] = "",
    category: Annotated[Optional[list[str]], typer.Option("--category", "-c", help="a category to follow; repeat for more; none = all")] = None,
) -> None:
    """Add a subscriber, or update the name and categories of an existing one (never their status).

    A category must be one the imported comparisons use (any letter case): a typo is refused with the
    closest match. Before any comparison is imported nothing can be checked, and a warning says so.

    \b
    Examples:
      digest subscribers add ada@example.com --name Ada
      digest subscribers add ada@example.com -c "Developer Tools" -c Writing
    """
    from digest.importing import InvalidAddress, add_subscriber

    settings = settings_for_run(need_secrets=False)
    try:
        result = add_subscriber(engine=engine_for(settings), email=email, name=name, categories=category or [], now=utcnow())
    except (InvalidAddress, ValueError) as exc:  # ValueError: a name digest.subscribers.names refuses
        raise fail(str(exc))
    console.print(f"{result.email}: {'added' if result.created else 'updated'}")
    warn_unchecked(result.unchecked)


@subscribers_app.command("import")
def subscribers_import(file: Annotated[Path, typer.Argument(metavar="FILE", help="CSV with a header row email,name,categories")]) -> None:
    """Import subscribers from CSV: header `email,name,categories`, categories separated by `;` (empty = all).

    Good rows are imported; each bad row is reported by the line where it starts, as an editor numbers
    lines. The summary counts new addresses, addresses already in the store, rows repeating an address
    met earlier in the file (any letter case; the later row wins) and bad rows. A row naming a category
    no imported comparison uses is bad, with the closest match. Existing subscribers
    keep their status (an import never re-subscribes someone who left). A file that cannot be read to
    its end (a quote never closed, bytes that are not UTF-8) stops there: the rows before it are
    imported, the message says how many, and importing the fixed file again is safe.

    \b
    Example:
      digest subscribers import list.csv
    """
    from digest.importing import ImportStopped, InvalidImport, import_subscribers

    settings = settings_for_run(need_secrets=False)
    try:
        result = import_subscribers(engine=engine_for(settings), path=file, now=utcnow(),
                                    progress=progress_shown(settings))
    except ImportStopped as exc:
        print_row_errors(file, exc.result)
        raise fail(str(exc))
    except InvalidImport as exc:
        raise fail(str(exc))
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror or exc}")
    print_row_errors(file, result)
    console.print(f"{file}: {result.summary()}", highlight=False, markup=False)
    warn_unchecked(result.unchecked_categories)


def warn_unchecked(categories) -> None:
    """Categories stored without a check, because no comparison is in the store yet to check them against."""
    if categories:
        from digest.quoting import quoted

        names = ", ".join(quoted(name, 60) for name in categories[:5]) + (", …" if len(categories) > 5 else "")
        errors.print(f"warning: no comparison is in the store yet, so no category could be checked; stored as "
                     f"written: {names}. Import the comparisons first (digest comparisons import FILE) to have "
                     "typos caught.", highlight=False, markup=False, soft_wrap=True)


def print_row_errors(file: Path, result) -> None:
    for row in result.errors:
        errors.print(f"{file}: line {row.line}: {row.email!r}: {row.reason}", highlight=False, markup=False,
                     soft_wrap=True)
    if result.bad_rows > len(result.errors):
        errors.print(f"{file}: … and {result.bad_rows - len(result.errors)} more bad rows", highlight=False)


# -- send ------------------------------------------------------------------------------------------------

def progress_shown(settings: Settings, *, write=None):
    """Progress on stderr, never stdout: a bar on a terminal, else a line every DIGEST_PROGRESS_SECONDS
    through ``write`` (default: plain lines on stderr). See digest.progress."""
    from digest.progress import progress_for

    return progress_for(errors, interval=settings.progress_seconds, write=write)


@app.command("send")
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
    unsubscribed, bounced, complained) and the count per reason; with --json, everyone. An issue that
    already went out is only described.

    --test-to sends the real rendered issue to those addresses only, through the configured transport,
    with "[TEST]" in the subject; it opens no issue and touches no delivery or statistic.

    \b
    Examples:
      digest send --dry-run
      digest send --test-to me@example.com
      digest send
    """
    from digest.send.loop import SendAborted, Sender
    from digest.services import build_services, settle_heap
    from digest.weekly import run

    if as_json and not dry_run:
        raise fail("--json goes with --dry-run: digest send --dry-run --json", 2)
    settings = settings_for_run(need_secrets=not dry_run)
    now = utcnow()
    if test_to:
        _test_send(settings, week=week, now=now, addresses=test_to, as_email=as_email)
        return
    if dry_run:
        from digest.editor.dry_run import LISTED, dry_run as plan
        from digest.cli.reporting import print_dry_run

        found = plan(services=build_services(settings), week=week, now=now, limit=None if as_json else LISTED)
        if as_json:
            import json

            sys.stdout.write(json.dumps(found.as_dict(tz=settings.tz), indent=2, ensure_ascii=False) + "\n")
        else:
            print_dry_run(console, found, tz=settings.tz)
        return
    from digest.cli.reporting import print_run

    services = build_services(settings)
    sender = Sender(services=services, progress=progress_shown(settings))
    settle_heap()
    try:
        result = run(services=services, sender=sender, now=now, week=week or _current_week(settings, now))
    except SendAborted as exc:
        print_run(console, None, [exc.report])
        raise fail(str(exc))
    print_run(console, result, result.reports)
    if any(report.failed for report in result.reports):
        raise typer.Exit(1)


def _test_send(settings: Settings, *, week, now, addresses: str, as_email) -> None:
    from digest.importing import InvalidAddress, normalize_address
    from digest.services import build_services
    from digest.editor.preview import NothingToPreview, render_for, test_send
    from digest.transports import PermanentError, TransientError

    try:
        emails = [normalize_address(a.strip()).email for a in addresses.split(",") if a.strip()]
    except InvalidAddress as exc:
        raise fail(str(exc), 2)
    if not emails:
        raise fail("--test-to needs at least one address", 2)
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


def _current_week(settings: Settings, now) -> str:
    from digest.claim.weeks import iso_week

    return iso_week(now.astimezone(settings.tz))


# -- preview --------------------------------------------------------------------------------------------

@app.command("preview")
@reports_template_errors
def preview(
    week: Annotated[Optional[str], week_option("ISO week, e.g. 2026-W48 (default: this week)")] = None,
    as_email: Annotated[Optional[str], typer.Option("--as", metavar="EMAIL", help="render as this subscriber gets it (default: a sample reader of all categories)")] = None,
    format: Annotated[str, typer.Option("--format", "-f", help="html, text, mjml, subject or eml (the whole message with headers)")] = "html",
    out: Annotated[Optional[Path], typer.Option("--out", "-o", metavar="FILE", help="file to write (default: standard output)")] = None,
    serve: Annotated[bool, typer.Option("--serve", help="serve a live preview page on 127.0.0.1 instead (desktop, phone, text; reloads on change)")] = False,
    port: Annotated[int, typer.Option(help="with --serve: the port")] = 8001,
    host: Annotated[str, typer.Option(help="with --serve: the address to listen on; anything but loopback lets others on the network see every subscriber's address and personal links")] = "127.0.0.1",
) -> None:
    """Render the coming issue (or --week) as a subscriber would get it, to a file or standard output.

    A week with no issue yet shows what an issue opened now would claim, and says so on standard error.

    With --serve, a page at http://127.0.0.1:PORT/ shows the email at desktop and phone widths side by
    side with its plain text, a picker for week and subscriber, and who gets what; it reloads by itself
    when a template or the data changes, and shows template errors with file and line. It is for this
    machine: it listens on 127.0.0.1 and answers only requests for 127.0.0.1, localhost or [::1] (421
    otherwise; a DNS-rebinding page cannot read it). --host listens elsewhere, with a warning; the page
    then also answers to that address (a wildcard such as 0.0.0.0 adds no name: use a tunnel).

    \b
    Examples:
      digest preview --as ada@example.com --format html --out issue.html
      digest preview --serve
    """
    from digest.editor.preview import NothingToPreview, as_eml, preview as render_preview, render_for
    from digest.services import build_services

    if format not in ("html", "text", "mjml", "subject", "eml"):
        raise fail(f"--format must be html, text, mjml, subject or eml, not {format!r}", 2)
    settings = settings_for_run(need_secrets=False)
    services = build_services(settings)
    if serve:
        import uvicorn

        from digest.editor.desk import create_editor_app, is_loopback, page_url
        from digest.ports import listen_problem

        if problem := listen_problem(host, port):  # before the URL: it would lead to the other server
            raise fail(problem, 2)
        if not is_loopback(host):
            errors.print(f"warning: --host {host} listens beyond this machine: whoever reaches port {port} sees "
                         "every subscriber's address and personal links (unsubscribe, preferences). Prefer "
                         "127.0.0.1 and an SSH tunnel.", highlight=False, markup=False, soft_wrap=True)
        console.print(f"preview at {page_url(host, port)} (Ctrl-C to stop)")
        from digest.web.server import uvicorn_options

        uvicorn.run(create_editor_app(services, bind=host), **uvicorn_options(host=host, port=port, log_level="warning"))
        return
    try:
        if format == "eml":
            result = render_for(services=services, week=week, now=utcnow(), as_email=as_email)
            body = as_eml(services=services, rendered=result)
        else:
            result = render_preview(services=services, week=week, now=utcnow(), as_email=as_email)
            body = getattr(result.email, format).encode()
        reader, issue_week = result.reader, result.week
    except NothingToPreview as exc:
        raise fail(str(exc))
    if result.showing:  # a week with no issue: say it is not that week's content
        errors.print(result.showing, highlight=False, markup=False, soft_wrap=True)
    if out is None:
        sys.stdout.buffer.write(body if body.endswith(b"\n") else body + b"\n")
        return
    out.write_bytes(body)
    errors.print(f"wrote {out} ({len(body):,} bytes): issue {issue_week} as {reader}", highlight=False)


# -- stats -----------------------------------------------------------------------------------------------

@app.command("stats")
def stats(
    week: Annotated[Optional[str], week_option("only this ISO week, e.g. 2026-W48 (default: every issue)")] = None,
    last: Annotated[int, typer.Option(metavar="N", help="the table shows this many latest issues (0: all)")] = 6,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON for scripts instead of a table (every issue)")] = False,
    html: Annotated[Optional[Path], typer.Option("--html", metavar="FILE", help="write a page with a chart of the rates over the issues to this file")] = None,
) -> None:
    """Per issue: recipients, sent, failed, delivered, bounced, human and machine opens, clickers, unsubscribes.

    People are counted once per delivery (a reader who opens five times is one human opener); machine
    opens (image proxies, Apple Mail Privacy Protection, opens within seconds of the send) are kept apart
    from human ones. Rates are of delivered when the Event Webhook reported deliveries, else of sent.

    --html writes a self-contained page with a chart of open, click and unsubscribe rates over the
    issues (human and machine opens apart) and the table; `digest preview --serve` shows it at /stats.

    \b
    Examples:
      digest stats --week 2026-W48
      digest stats --html stats.html
    """
    import json

    from digest.track.stats import issue_stats

    settings = settings_for_run(need_secrets=False)
    rows = issue_stats(engine=engine_for(settings), week=week)
    if week and not rows:
        raise fail(f"no issue for week {week}; `digest stats` lists every issue")
    if as_json:
        sys.stdout.write(json.dumps([row.as_dict() for row in rows], indent=2) + "\n")
        return
    if html is not None:
        from digest.track.stats_page import stats_page

        html.write_text(stats_page(rows), encoding="utf-8")
        console.print(f"wrote {html} ({len(rows)} issues): open it in a browser")
        return
    if not rows:
        console.print("no issues yet")
        return
    console.print(_stats_table(rows[:last] if last > 0 else rows))


def _stats_table(rows) -> Table:
    """One column per issue, one row per figure: readable on an 80-column terminal."""
    from rich.table import Table

    def pct(rate: float | None) -> str:
        return "" if rate is None else f" · {rate:.1%}"

    table = Table(caption="people (openers, clickers, …) are distinct deliveries; % is of the base row "
                          "(bounced: of sent); machine-only: opened only by image proxies or privacy prefetch")
    table.add_column("figure")
    for row in rows:
        table.add_column(row.week, justify="right", no_wrap=True)
    lines = {
        "recipients": lambda r: str(r.recipients),
        "sent": lambda r: str(r.sent),
        "failed": lambda r: str(r.failed),
        "delivered": lambda r: str(r.delivered),
        "bounced (hard)": lambda r: f"{r.bounced}{pct(r.rates['bounce'])}",
        "human openers": lambda r: f"{r.human_openers}{pct(r.rates['open'])}",
        "machine-only openers": lambda r: f"{r.machine_only_openers}{pct(r.rates['machine_only_open'])}",
        "opens, all (machine)": lambda r: f"{r.opens} ({r.machine_opens})",
        "clickers": lambda r: f"{r.clickers}{pct(r.rates['click'])}",
        "unsubscribes": lambda r: f"{r.unsubscribes}{pct(r.rates['unsubscribe'])}",
        "complaints": lambda r: f"{r.complaints}{pct(r.rates['complaint'])}",
        "% base": lambda r: r.rate_base,
    }
    for label, cell in lines.items():
        table.add_row(label, *(cell(row) for row in rows))
    return table


# -- worker ----------------------------------------------------------------------------------------------

@app.command("worker")
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

    from digest.progress import CurrentStderr
    from digest.send.loop import Sender
    from digest.send.worker import Worker
    from digest.services import build_services, settle_heap

    settings = settings_for_run()
    if batch_size is not None:
        settings.batch_size = batch_size
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=CurrentStderr())  # above the progress bar on a terminal, not through it
    progress = progress_shown(settings, write=logging.getLogger("digest.progress").info)  # log lines, timestamped
    services = build_services(settings)
    runner = Worker(services=services, sender=Sender(services=services, progress=progress),
                    idle_seconds=settings.worker_idle_seconds)
    settle_heap()
    logging.getLogger("digest.worker").info("worker started: batches of %d, lease %.0f s%s", settings.batch_size,
                                            settings.lease_seconds, ", once" if once else "")
    signal.signal(signal.SIGTERM, runner.stop)
    signal.signal(signal.SIGINT, runner.stop)
    report = runner.run(once=once)
    console.print(f"worker: sent {report.sent} in {report.batches} batches, failed {report.failed}, "
                  f"{report.ambiguous} possible duplicates, {report.rate_limited} rate limited, "
                  f"{report.shared_waits} shared waits")
    for line in report.errors:
        errors.print(line, highlight=False, markup=False)
    if report.failed:
        raise typer.Exit(1)


# -- serve -----------------------------------------------------------------------------------------------

@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(metavar="N", help="uvicorn worker processes")] = 1,
) -> None:
    """Run the web app: open pixel, click redirects, unsubscribe, preferences, signup, webhook, archive.

    Put it behind a TLS-terminating proxy at DIGEST_BASE_URL; every link in the emails points there.
    Request bodies are capped as they arrive (webhook 5 MB, forms 16 KB, anything else 4 KB): 413 past
    the cap, 408 for a body still arriving after 10 s (webhook 30 s) or headers after 10 s. No `server:` header.

    \b
    Example:
      digest serve --host 0.0.0.0 --port 8000 --workers 2
    """
    import uvicorn

    from digest.ports import listen_problem
    from digest.web.server import uvicorn_options

    settings_for_run()  # refuse placeholder secrets before listening
    if problem := listen_problem(host, port):  # one line, not uvicorn's log and exit 1
        raise fail(problem, 2)
    uvicorn.run("digest.web.main:app", **uvicorn_options(host=host, port=port, workers=workers))


# -- demo ------------------------------------------------------------------------------------------------

@app.command("demo")
@reports_template_errors
def demo(
    directory: Annotated[Path, typer.Option("--dir", metavar="DIR", help="where the demo writes its database, outbox and previews")] = Path("digest-demo"),
) -> None:
    """Run the whole weekly flow on demo data: SQLite, a local outbox, no network, no keys.

    Imports a dozen comparisons over two weeks and a few dozen subscribers, sends last week's issue
    (catching up the week the scheduler "missed"), plays its readers (opens by people and by image
    proxies, clicks, one unsubscribe), sends this week's, and writes every email to an outbox, an HTML
    preview per segment and the stats chart. Starts afresh each time.

    \b
    Example:
      digest demo --dir /tmp/verdicts-demo
    """
    from digest.demo.run import run_demo

    run_demo(directory=directory, console=console)


if __name__ == "__main__":
    app()
