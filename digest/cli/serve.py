"""`digest serve` (the web app, digest.web.main, under uvicorn) and `digest demo` (digest.demo.run)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from digest.cli.shared import console, fail, reports_template_errors, settings_for_run


def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    workers: Annotated[int, typer.Option(metavar="N", help="uvicorn worker processes")] = 1,
    access_log: Annotated[bool, typer.Option(help="a line per request on stdout, tokens in links shown as …")] = True,
) -> None:
    """Run the web app: open pixel, click redirects, unsubscribe, preferences, signup, webhook, archive.

    Put it behind a TLS-terminating proxy at DIGEST_BASE_URL; every link in the emails points there.
    Request bodies are capped as they arrive (webhook 5 MB, forms 16 KB, anything else 4 KB): 413 past
    the cap, 408 for a body still arriving after 10 s (webhook 30 s) or headers after 10 s. No `server:` header.
    The access log never shows a reader's token (a link's token is "…", a query string "?…"); turn it off
    with --no-access-log when the proxy in front keeps one.

    \b
    Example:
      digest serve --host 0.0.0.0 --port 8000 --workers 2
    """
    import uvicorn

    from digest.cli.send import refuse_unsafe_links
    from digest.ports import listen_problem
    from digest.web.server import uvicorn_options

    # Refuse placeholder secrets, and a SendGrid base URL readers cannot safely reach (its signup confirmations
    # would carry those links), before listening: a refusal at start is seen, a refused signup mail is not.
    refuse_unsafe_links(settings_for_run())
    if problem := listen_problem(host, port):  # one line, not uvicorn's log and exit 1
        raise fail(problem, 2)
    uvicorn.run("digest.web.main:app", **uvicorn_options(host=host, port=port, workers=workers,
                                                               access_log=access_log))


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
