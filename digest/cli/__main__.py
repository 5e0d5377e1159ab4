"""`python -m digest.cli`: the same as `digest`."""

from digest.cli.commands import app

app()
