"""`digest preview`: the coming issue as a subscriber gets it (digest.editor.preview), written to a file or
standard output, or served live by the editor's desk (digest.editor.desk) with --serve."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from digest.cli.shared import console, errors, fail, reports_template_errors, settings_for_run, utcnow, warn, week_option

if TYPE_CHECKING:
    from digest.services import Services

FORMATS = ("html", "text", "mjml", "subject", "eml")


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
    from digest.services import build_services

    if format not in FORMATS:
        raise fail(f"--format must be html, text, mjml, subject or eml, not {format!r}", 2)
    settings = settings_for_run(need_secrets=False)
    services = build_services(settings)
    if serve:
        _serve(services, host=host, port=port)
        return
    body, issue_week, reader = _rendered(services, week=week, as_email=as_email, format=format)
    if out is None:
        sys.stdout.buffer.write(body if body.endswith(b"\n") else body + b"\n")
        return
    out.write_bytes(body)
    errors.print(f"wrote {out} ({len(body):,} bytes): issue {issue_week} as {reader}", highlight=False)


def _rendered(services: Services, *, week: str | None, as_email: str | None, format: str) -> tuple[bytes, str, str]:
    """The issue in ``format`` as bytes, its week and its reader; a week with no issue says so on stderr."""
    from digest.editor.preview import NothingToPreview, as_eml, preview as render_preview, render_for

    try:
        if format == "eml":
            result = render_for(services=services, week=week, now=utcnow(), as_email=as_email)
            body = as_eml(services=services, rendered=result)
        else:
            result = render_preview(services=services, week=week, now=utcnow(), as_email=as_email)
            body = getattr(result.email, format).encode()
    except NothingToPreview as exc:
        raise fail(str(exc))
    if result.showing:  # a week with no issue: say it is not that week's content
        warn(result.showing)
    return body, result.week, result.reader


def _serve(services: Services, *, host: str, port: int) -> None:
    """The live preview page on ``host``:``port``, until Ctrl-C; a busy port is one line and exit 2."""
    import uvicorn

    from digest.editor.desk import create_editor_app, is_loopback, page_url
    from digest.ports import listen_problem
    from digest.web.server import uvicorn_options

    if problem := listen_problem(host, port):  # before the URL: it would lead to the other server
        raise fail(problem, 2)
    if not is_loopback(host):
        warn(f"warning: --host {host} listens beyond this machine: whoever reaches port {port} sees "
             "every subscriber's address and personal links (unsubscribe, preferences). Prefer "
             "127.0.0.1 and an SSH tunnel.")
    console.print(f"preview at {page_url(host, port)} (Ctrl-C to stop)")
    uvicorn.run(create_editor_app(services, bind=host), **uvicorn_options(host=host, port=port, log_level="warning"))
