"""`python -m digest`: the same as the `digest` command."""

from digest.cli.commands import app

app(prog_name="digest")
