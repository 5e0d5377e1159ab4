"""The steps every email takes: one Jinja2 environment over the templates (autoescaped, `neutralize` on every
output), a subject/text/MJML triplet rendered in it, MJML compiled to HTML. The digest, the web version and
the signup mail all go through `render_email`."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jinja2
import jinja2.filters
from mjml import mjml2html

from digest.render.text import Laid, clip, neutralize, one_line


class RenderError(Exception):
    """A template did not render or its MJML did not compile; the message names the template."""


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str
    mjml: str


def templates_dir() -> Path:
    """The templates: ``digest/_templates`` in an installed wheel (pyproject force-include), else the repo's."""
    packaged = Path(__file__).resolve().parents[1] / "_templates"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[2] / "templates"


def make_environment(path: Path | None = None) -> jinja2.Environment:
    """Jinja2 over the templates directory: autoescape for HTML and MJML, none for text and subjects."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(path or templates_dir()),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html", "mjml", "mjml.j2", "html.j2"),
            disabled_extensions=("txt", "txt.j2", "subject.j2"),
            default_for_string=True,
            default=True,
        ),
        undefined=jinja2.StrictUndefined,
        finalize=neutralize,
        trim_blocks=True,
        lstrip_blocks=True,
        # An included partial keeps its last newline: mjml-python refuses whitespace without a newline
        # between the children of mj-head ("</mj-raw>  </mj-head>" is a parse error, "\n  " is not).
        keep_trailing_newline=True,
    )
    env.filters["clip"] = clip
    env.globals["para"] = _para(env)
    return env


def _para(env: jinja2.Environment):
    """The text part's `para` for ``env`` (the wrapping writes the environment's newline sequence)."""

    def para(value, indent: str = "") -> Laid:
        """The text part's paragraph: one line of text wrapped at 76 columns, never inside a word or a URL,
        then indented. Line breaks in ``value`` are spaces (`neutralize`): the only line starts are the
        wrapping's, every one at ``indent``. So a paragraph carrying any imported value is indented — at
        column 0 stand only the template's own words, and a wrapped title cannot begin a line there.

        A Python function rather than a template macro: it runs a hundred times per text part, and Jinja's
        macro machinery cost more than the wrapping (benchmarks/render.py).
        """
        value = neutralize(value)
        width = 76 - len(indent)
        if len(value) <= width and value.isprintable() and value == value.strip():
            # Most paragraphs (names, prices, titles) are one short line that wrapping would return as it
            # is; textwrap's chunking was the larger part of the text part's cost. Checked equal to the
            # full path for any text (tests/test_render.py).
            return Laid(indent + value)
        wrapped = jinja2.filters.do_wordwrap(env, value, width, break_long_words=False, break_on_hyphens=False)
        return Laid(jinja2.filters.do_indent(wrapped, indent, first=True))

    return para


@lru_cache(maxsize=1)
def email_environment() -> jinja2.Environment:
    """The environment over the shipped templates, built once per process: every email renders in it."""
    return make_environment()


def render_email(*, env: jinja2.Environment, templates: Sequence[str], context: dict) -> RenderedEmail:
    """Render the (subject, text, MJML) ``templates`` with ``context`` and compile the MJML; RenderError names
    the template that failed. An empty text template name leaves the text part empty (the web version)."""
    subject_template, text_template, mjml_template = templates
    mjml = _render(env, mjml_template, context)
    try:
        html = merge_outlook_conditionals(mjml2html(mjml))
    except Exception as exc:  # mjml-python raises plain exceptions with a parser message
        raise RenderError(f"{mjml_template}: the rendered MJML did not compile: {exc}") from exc
    return RenderedEmail(
        subject=one_line(_render(env, subject_template, context)),
        html=html,
        text=_render(env, text_template, context) if text_template else "",
        mjml=mjml,
    )


# Where one Outlook-only block ends and the next begins at once: the two are one block. The reference MJML
# merges them so when it minifies (mergeOutlookConditionnals); mjml-python does not, and an email of ten
# comparisons carries ~150 of these seams, ~2.3 KB of the 90 KB budget.
_OUTLOOK_SEAM = re.compile(r"<!\[endif\]-->\s*<!--\[if mso \| IE\]>")


def merge_outlook_conditionals(html: str) -> str:
    """``html`` with adjacent Outlook-only conditional comments joined into one: what Outlook reads is the
    same markup, in the same order; every other client skips one comment instead of two."""
    return _OUTLOOK_SEAM.sub("", html)


def _render(env: jinja2.Environment, name: str, context: dict) -> str:
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateError as exc:
        raise RenderError(f"{name}: {exc}") from exc
