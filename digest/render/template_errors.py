"""Where a template went wrong, as one line a person can act on: "templates/email/digest.mjml.j2:12: unexpected '}'".

The compiler's form (file:line: message) so an editor or a terminal can jump to it. Shared by the CLI
(`preview`, `send`, `demo`) and the live preview page (`digest.editor.desk`).
"""

from __future__ import annotations

import traceback
from pathlib import Path

import jinja2

from digest.render.environment import templates_dir


def template_error(exc: BaseException) -> str:
    """``exc`` (a RenderError, or what it wraps) as "file:line: message"; the file relative to the current
    directory when it lies below it. An MJML error has no template line (it is about the rendered
    output): "file: message"."""
    cause = exc.__cause__ or exc
    if isinstance(cause, jinja2.TemplateSyntaxError):
        return f"{_path(cause.filename or cause.name or '?')}:{cause.lineno}: {cause.message}"
    frames = [f for f in traceback.extract_tb(cause.__traceback__) if f.filename.endswith(".j2")]
    if frames:
        return f"{_path(frames[-1].filename)}:{frames[-1].lineno}: {cause}"
    name, separator, message = str(exc).partition(": ")
    if separator and name.endswith(".j2"):  # RenderError names the template it was rendering
        return f"{_path(str(templates_dir() / name))}: {message}"
    return str(exc)


def _path(filename: str) -> str:
    path = Path(filename)
    if not path.is_absolute():
        path = templates_dir() / path
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
