"""`digest db upgrade`, `digest comparisons import` and `pull`, `digest subscribers add`, `import` and
`sunset`: what goes into the store, and the sunset of silent readers. The work is storage.migrate's,
digest.importing's and digest.subscribers.sunset's; here, arguments and words."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from digest.cli.shared import check_store, console, engine_for, errors, fail, progress_shown, settings_for_run, utcnow, warn


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

    settings = settings_for_run(need_secrets=False)
    engine = engine_for(settings)
    try:
        result = import_comparisons(engine=engine, path=file, now=utcnow(), progress=progress_shown(settings))
    except InvalidImport as exc:
        raise fail(f"{exc}\nnothing was imported")
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror or exc}")
    console.print(f"{file}: {result.created} new, {result.updated} updated, {result.unchanged} unchanged")
    if result.verdicts_changed:
        console.print(f"{result.verdicts_changed} tools' verdicts changed since readers got them: the next issue "
                      "tells those readers", highlight=False)
    warn_refused(refused_categories(engine))


def comparisons_pull(url: Annotated[str, typer.Argument(metavar="URL", help="http(s) URL of a JSON array in the import format")]) -> None:
    """Fetch a comparison feed and import it whole, with the file import's checks (upsert by slug).

    The GET is conditional: it sends back the ETag and Last-Modified of the last answer imported from
    URL, and a 304 imports nothing. It gives up after DIGEST_COMPARISONS_FEED_TIMEOUT seconds. A feed
    that cannot be fetched or holds a bad item imports nothing; `digest send --dry-run` shows the
    error for DIGEST_COMPARISONS_FEED_URL, which the scheduler pulls before every run.

    \b
    Example:
      digest comparisons pull https://verdicts.example.com/feed.json
    """
    from digest.importing.comparisons import refused_categories
    from digest.importing.feed import FeedError, pull, url_problem

    if url_problem(url):
        raise fail(url_problem(url), 2)
    settings = settings_for_run(need_secrets=False)
    engine = engine_for(settings)
    try:
        pulled = pull(engine=engine, url=url, timeout=settings.comparisons_feed_timeout, now=utcnow())
    except FeedError as exc:
        shown = exc.details or f"{url}: {exc}"  # a refused file: every problem, as the file import lists them
        raise fail(f"{shown}\nnothing was imported")
    console.print(f"{url}: {pulled.summary()}", highlight=False, markup=False)
    warn_refused(refused_categories(engine))


def warn_refused(refused: dict[str, int]) -> None:
    """Categories already in the store that the contract now refuses, each with how many comparisons use it."""
    if refused:
        from digest.quoting import quoted

        names = ", ".join(f"{quoted(name, 60)} ({count})" for name, count in sorted(refused.items()))
        warn(f"warning: comparisons in the store are filed under categories the contract refuses: {names}. "
             "Nobody can follow these on their own (readers of every category still get them): import "
             "those comparisons again with the category renamed.")


def subscribers_add(
    email: Annotated[str, typer.Argument(metavar="EMAIL", help="the subscriber's address")],
    name: Annotated[str, typer.Option(help="how to greet them")] = "",
    category: Annotated[Optional[list[str]], typer.Option("--category", "-c", help="a category to follow; repeat for more; none = all")] = None,
    timezone: Annotated[Optional[str], typer.Option("--timezone", metavar="ZONE", help="their IANA time zone, e.g. Europe/Berlin (\"\": the newsletter's own); unset: left as it is")] = None,
) -> None:
    """Add a subscriber, or update the name and categories (and with --timezone the time zone) of an existing
    one (never their status).

    A category must be one the imported comparisons use (any letter case): a typo is refused with the
    closest match. Before any comparison is imported nothing can be checked, and a warning says so.

    \b
    Examples:
      digest subscribers add ada@example.com --name Ada
      digest subscribers add ada@example.com -c "Developer Tools" -c Writing
      digest subscribers add ada@example.com --timezone Pacific/Auckland
    """
    from digest.importing import InvalidAddress, add_subscriber

    settings = settings_for_run(need_secrets=False)
    try:
        result = add_subscriber(engine=engine_for(settings), email=email, name=name, categories=category or [], now=utcnow(),
                                timezone=timezone)
    except (InvalidAddress, ValueError) as exc:  # ValueError: a name digest.subscribers.names refuses
        raise fail(str(exc))
    console.print(f"{result.email}: {'added' if result.created else 'updated'}")
    warn_unchecked(result.unchecked)


def subscribers_import(file: Annotated[Path, typer.Argument(metavar="FILE", help="CSV with a header row email,name,categories[,timezone]")]) -> None:
    """Import subscribers from CSV: header `email,name,categories`, categories separated by `;` (empty = all),
    and optionally `timezone` (an IANA name such as Europe/Berlin; empty = DIGEST_TIMEZONE). An unknown time
    zone refuses the whole file, naming its line, and imports nothing; a file without the column leaves the
    zones already stored as they are.

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
        warn(f"warning: no comparison is in the store yet, so no category could be checked; stored as "
             f"written: {names}. Import the comparisons first (digest comparisons import FILE) to have "
             "typos caught.")


def print_row_errors(file: Path, result) -> None:
    for row in result.errors:
        warn(f"{file}: line {row.line}: {row.email!r}: {row.reason}")
    if result.bad_rows > len(result.errors):
        errors.print(f"{file}: … and {result.bad_rows - len(result.errors)} more bad rows", highlight=False)


def subscribers_sunset(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="count who would be asked and who would go dormant; change nothing")] = False,
) -> None:
    """Ask silent readers once whether they still want the verdicts; make dormant who did not answer.

    A reader sent at least 8 issues in the last DIGEST_SUNSET_WEEKS weeks (default 26) without a human
    open, a click or a vote gets one "Still want the verdicts?" email, whose button keeps them. Fourteen
    days without an answer and they go dormant: no more issues until they resume from any old link.
    The scheduler runs this daily; says how many were asked and how many went dormant. Exit 1 when the
    provider failed (those not asked are asked on the next pass); exit 2, nothing done, when a real
    SendGrid send would carry links to a DIGEST_BASE_URL that is not https:// on a public host.

    \b
    Examples:
      digest subscribers sunset --dry-run
      digest subscribers sunset
    """
    from digest.services import build_services
    from digest.subscribers.sunset import sunset

    settings = settings_for_run(need_secrets=not dry_run)
    if not dry_run:
        from digest.cli.send import refuse_unsafe_links

        refuse_unsafe_links(settings)  # a real send's links must be https:// and public: one line, exit 2
    report = sunset(services=build_services(settings), now=utcnow(), dry_run=dry_run)
    would = "would be " if dry_run else ""
    console.print(f"{report.asked} silent readers {would}asked whether they still want the verdicts; "
                  f"{report.dormant} {'would go' if dry_run else 'went'} dormant", highlight=False)
    if report.error:
        raise fail(f"asking stopped early: {report.error}")
