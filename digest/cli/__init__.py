"""The command line, `digest …`: a thin layer over `digest.services` (the Typer object is `digest.cli.main.cli`)."""
