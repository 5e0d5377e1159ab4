"""What every `digest` command uses: the two consoles, `fail`, the --week option, the settings and the store
checked before a command does anything, and progress on stderr.

Only typer and rich at import time: `digest --help` must answer at once (issue 14: 2 s with the store,
pydantic and the web stack imported here). Each helper imports what it uses; tests/test_cli_help.py checks.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from digest.config import Settings

console = Console(soft_wrap=True)  # paths and URLs stay whole, copyable
errors = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    # escaped: a message quotes what a file or a person wrote, and "[/x]" in it would be read as markup
    errors.print(f"[bold red]error:[/] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    return typer.Exit(code)


def warn(message: str) -> None:
    """A line on stderr, printed as written (it quotes names from files, which may hold "[x]")."""
    errors.print(message, highlight=False, markup=False, soft_wrap=True)


def _checked_week(value: Optional[str]) -> Optional[str]:
    """--week as the store names weeks ("2026-w9" is 2026-W09); "banana" or 2026-W54 is one line, exit 2.
    (A typer callback: one parameter, the value.)"""
    return _label(value, option="--week", months=False)


def _checked_issue_week(value: Optional[str]) -> Optional[str]:
    """--week naming any issue: an ISO week or a monthly issue's label."""
    return _label(value, option="--week", months=True)


def _label(value: Optional[str], *, option: str, months: bool) -> Optional[str]:
    """``value`` as the store names weeks ("2026-w9" is 2026-W09); "banana" or 2026-W54 is one line, exit 2. With
    ``months``, a monthly issue's label too ("2026-m12" is 2026-M12, issue 19)."""
    if value is None:
        return None
    import re

    from digest.claim.weeks import BadWeek, parse_week

    month = re.fullmatch(r"(\d{4})-?m(\d{1,2})", value.strip(), re.IGNORECASE) if months else None
    if month and 1 <= int(month[2]) <= 12:
        return f"{month[1]}-M{int(month[2]):02d}"
    try:
        return parse_week(value, today=utcnow().date())
    except BadWeek as exc:
        raise fail(exc.for_option(option), 2)


def checked_issue_label(value: Optional[str], option: str) -> Optional[str]:
    """An issue's label given as ``option``: an ISO week, or a monthly issue's "2026-M12"; else one line, exit 2."""
    return _label(value, option=option, months=True)


def week_option(help: str, *, months: bool = False):
    """The --week option of every command that takes one: checked before the command runs (``months``: a monthly
    issue's label too)."""
    return typer.Option("--week", help=help, callback=_checked_issue_week if months else _checked_week)


def reports_template_errors(command):
    """A template that fails to render is one line, "templates/email/digest.mjml.j2:12: message", exit 2."""

    @functools.wraps(command)
    def checked(*args, **kwargs):
        from digest.render.environment import RenderError

        try:
            return command(*args, **kwargs)
        except RenderError as exc:
            from digest.render.template_errors import template_error

            raise fail(template_error(exc), 2) from None

    return checked


def utcnow():
    from storage.types import utcnow

    return utcnow()


def settings_for_run(*, need_secrets: bool = True, store: bool = True) -> Settings:
    """The settings of a command; with ``store`` (every command that opens the database) it is checked too."""
    from digest.config import ConfigError, Settings

    try:
        settings = Settings()
        if need_secrets:
            settings.check_secrets()
    except ConfigError as exc:
        raise fail(str(exc), 2)
    except ValueError as exc:  # pydantic's validation error names the setting
        raise fail(f"bad setting: {exc}", 2)
    if store:
        check_store(settings)
    return settings


def check_store(settings: Settings, *, upgrading: bool = False) -> str | None:
    """storage.migrate.ready: a missing SQLite file is created (said on stderr); anything else unusable is
    one line and exit 2, before the command does anything."""
    from storage.migrate import StoreUnusable, ready

    try:
        note = ready(settings.database_url, upgrading=upgrading)
    except StoreUnusable as exc:
        raise fail(str(exc), 2) from None
    if note and not upgrading:
        warn(note)
    return note


def engine_for(settings: Settings):
    from storage.db import make_engine

    return make_engine(settings.database_url)


def progress_shown(settings: Settings, *, write=None):
    """Progress on stderr, never stdout: a bar on a terminal, else a line every DIGEST_PROGRESS_SECONDS
    through ``write`` (default: plain lines on stderr). See digest.progress."""
    from digest.progress import progress_for

    return progress_for(errors, interval=settings.progress_seconds, write=write)
