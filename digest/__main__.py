"""`python -m digest`: the same as the `digest` command."""

from digest.cli import app

app(prog_name="digest")
