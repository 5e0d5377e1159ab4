"""`python -m digest`: the same as the `digest` command."""

from digest.cli.main import cli

cli(prog_name="digest")
