"""The command line, `digest …`: a thin layer over `digest.services` (commands in `digest.cli.commands`)."""
