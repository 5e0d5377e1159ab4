"""How every `digest` command prints its --help: click's plain layout, readable at 80 columns.

Typer 0.29's rich panels label every flag `<bool>` and every value `<str>`, keep a docstring's line breaks
in the middle of sentences and squeeze the text into the right half of a box. Click's own formatter
re-flows each paragraph to the terminal's width and keeps the lines of a paragraph that starts with `\\b`
(the examples). Here values are named by their metavar (`--week WEEK`, `FILE`), never by a type.
It also keeps `rich`'s Markdown renderer out of `digest --help` (tests/test_cli_help.py).
"""

from __future__ import annotations

import typer
from typer.core import TyperArgument, TyperCommand


def metavar(param) -> str:
    """What a value is called in help: the declared metavar, else the parameter's name in capitals."""
    return param.metavar or param.name.upper()


class Command(TyperCommand):
    """A command whose --help names arguments and option values by metavar and never truncates a summary."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        arguments = [metavar(p) if p.required else f"[{metavar(p)}]" for p in self._arguments(ctx)]
        return [self.options_metavar, *arguments]

    def format_options(self, ctx, formatter) -> None:
        arguments = [(metavar(p), p.help or "") for p in self._arguments(ctx)]
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        options = []
        for param in self.get_params(ctx):
            if param.param_type_name == "option":
                if not (param.is_flag or param.count or param.metavar):
                    param.metavar = metavar(param)
                options.append(param.get_help_record(ctx))
        with formatter.section("Options"):
            formatter.write_dl([record for record in options if record])

    def get_short_help_str(self, limit: int = 45) -> str:
        # The list of commands shows the first paragraph whole (wrapped, not cut with "...").
        return " ".join((self.short_help or self.help or "").split("\n\n")[0].split())

    def _arguments(self, ctx) -> list[TyperArgument]:
        return [p for p in self.get_params(ctx) if isinstance(p, TyperArgument) and not p.hidden]


class Typer(typer.Typer):
    """typer.Typer with plain help (no rich markup) whose commands are `Command`s."""

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("add_completion", False)
        super().__init__(rich_markup_mode=None, **kwargs)

    def command(self, *args, **kwargs):
        return super().command(*args, cls=Command, **kwargs)
