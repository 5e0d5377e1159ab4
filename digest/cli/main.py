"""The `digest` command, `cli`: every command and group, in the order `digest --help` lists them.

A thin layer over the library: each command (digest.cli.send, .preview, .stats, .serve, .store, .votes,
.issue, .doctor) handles its arguments, calls into the services or the domain, and prints; its docstring is its --help.
Nothing but typer and rich is imported until a command runs (tests/test_cli_help.py).
"""

from __future__ import annotations

from digest.cli import doctor, issue, preview, send, serve, stats, store, votes
from digest.cli.help import Typer

cli = Typer(help="Weekly AI Tool Verdicts: claim, render and send the weekly digest.",
            no_args_is_help=True, pretty_exceptions_enable=False)

db = Typer(help="Create or upgrade the database.", no_args_is_help=True)
db.command("upgrade")(store.db_upgrade)
comparisons = Typer(help="Import the comparisons the site published.", no_args_is_help=True)
comparisons.command("import")(store.comparisons_import)
comparisons.command("pull")(store.comparisons_pull)
subscribers = Typer(help="Add and import subscribers; the sunset of silent ones.", no_args_is_help=True)
subscribers.command("add")(store.subscribers_add)
subscribers.command("import")(store.subscribers_import)
subscribers.command("sunset")(store.subscribers_sunset)
site_votes = Typer(help="Readers' votes: push them to the site.", no_args_is_help=True)
site_votes.command("push")(votes.push)
issues = Typer(help="Pause, resume or cancel an issue's send.", no_args_is_help=True)
issues.command("pause")(issue.pause)
issues.command("resume")(issue.resume)
issues.command("cancel")(issue.cancel)
cli.add_typer(db, name="db")
cli.add_typer(comparisons, name="comparisons")
cli.add_typer(subscribers, name="subscribers")
cli.add_typer(site_votes, name="votes")
cli.add_typer(issues, name="issue")

cli.command("send")(send.send)
cli.command("preview")(preview.preview)
cli.command("stats")(stats.stats)
cli.command("worker")(send.worker)
cli.command("serve")(serve.serve)
cli.command("demo")(serve.demo)
cli.command("doctor")(doctor.doctor)
