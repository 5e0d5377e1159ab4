"""`python -m digest.cli`: the same as `digest`."""

from digest.cli.main import cli

cli()
