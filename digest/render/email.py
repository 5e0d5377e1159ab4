"""Render one segment of an issue: Jinja2 (autoescaped) → MJML → HTML, plus a subject and a plain-text part.

A segment is rendered once for all of its recipients, so nothing personal is rendered here: per-recipient
values (open pixel, unsubscribe and preference URLs, the reader's name) stay substitution tags that the
transport fills per recipient. Everything else comes from the store and is treated as hostile text:
`neutralize` runs on every ``{{ }}`` output so a title can neither forge a tag nor smuggle control
characters, and autoescape handles HTML. Our own tag-carrying URLs are `Tagged` and pass through as they are.

The web version (``web=True``, the archive's view-in-browser page) is the same HTML with nothing personal
and no tag at all: links go straight to the comparisons, the footer invites to subscribe instead of
carrying unsubscribe and preference links, and there is no open pixel.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import jinja2
import jinja2.filters
from markupsafe import Markup
from mjml import mjml2html

from digest.config import Settings
from digest.links import NAME_HTML_TAG, NAME_TEXT_TAG, Links
from storage.models import Comparison, Review

MJML_TEMPLATE = "email/digest.mjml.j2"
TEXT_TEMPLATE = "email/digest.txt.j2"
SUBJECT_TEMPLATE = "email/digest.subject.j2"

# Subjects past ~150 characters are cut by every client anyway; long ones read as spam.
SUBJECT_MAX = 150
# Inbox previews show 90–140 characters of the preheader.
PREHEADER_MAX = 140
# "The strongest opinion" is one line of the email, not the review.
OPINION_MAX = 160

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
# C0 and C1 control characters, DEL included; \t is kept (line breaks are handled before, by _LINE_BREAK).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Every line boundary str.splitlines() knows (CR, LF, CRLF, VT, FF, FS, GS, RS, NEL, U+2028, U+2029): a
# mail client may break a line at any of them, so in a value each one becomes one space.
_LINE_BREAK = re.compile(r"\r\n|[\n\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")
_ZWSP = "\u200b"


class RenderError(Exception):
    """A template did not render or its MJML did not compile; the message names the template."""


class Laid(str):
    """Text the text part's own `para` laid out: its line breaks are ours, so `neutralize` keeps them."""


class Tagged(str):
    """A URL we built that carries a substitution tag (``[%t%]``): `neutralize` leaves it as it is.

    Autoescape still escapes it like any str (``&`` becomes ``&amp;`` in an attribute).
    """


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    html: str
    text: str
    mjml: str


@dataclass(frozen=True)
class Opinion:
    """One review quoted as "the strongest opinion" of a comparison."""

    tool: str
    review: Review
    quote: str


@dataclass(frozen=True)
class Shown:
    """A comparison as the templates show it: the stored object, its tracked link, its quoted opinion."""

    comparison: Comparison
    link: Tagged
    opinion: Opinion | None


def neutralize(value):
    """Jinja ``finalize``: make text from the store unable to produce a substitution tag, a control char or a line.

    Every line break in a value becomes a space: a title cannot start a line of the text part of its own
    ("Unsubscribe:" and a foreign URL under it); the template decides where lines begin (`para`).

    "[%" gets a zero-width space ("[\u200b%") so "[%t%]" written in a title is never substituted; "<%"
    likewise (SendGrid's own unsubscribe tags). A value ending in "[" or starting with "%" is guarded too,
    so two adjacent values cannot join into "[%". `Tagged` URLs are ours and pass untouched, and so does
    `Markup` (a macro's output, already neutralized piece by piece): templates never mark store text safe.
    """
    if value is None:
        return ""
    if isinstance(value, (Tagged, Markup, Laid)) or not isinstance(value, str):
        # Markup and Laid are output of our own macros and `para`: every value in them went through here.
        return value
    if "%" not in value and value.isprintable() and not value.endswith(("[", "<")):
        # Nearly every value: nothing below would change it (isprintable() is False for every character
        # _CONTROL removes). Checked first because finalize runs for every expression of every template.
        return value
    value = _CONTROL.sub("", _LINE_BREAK.sub(" ", value))
    value = value.replace("[%", f"[{_ZWSP}%").replace("<%", f"<{_ZWSP}%")
    if value.endswith(("[", "<")):
        value += _ZWSP
    if value.startswith("%"):
        value = _ZWSP + value
    return value


def one_line(value: str, limit: int = SUBJECT_MAX) -> str:
    """A header-safe single line: no control characters, whitespace runs (CR/LF too) as one space, capped."""
    return clip(" ".join(_CONTROL.sub(" ", value).split()), limit)


def clip(value: str, limit: int) -> str:
    """At most ``limit`` characters, cut at a word boundary with an ellipsis when it had to be cut."""
    value = value.strip()
    if len(value) <= limit:
        return value
    cut = value[: limit - 1]
    if " " in cut[limit // 2 :]:
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:.-—") + "…"


def first_sentence(value: str, limit: int = OPINION_MAX) -> str:
    """The first sentence of a paragraph, at most ``limit`` characters (cut with an ellipsis)."""
    sentence = _SENTENCE_END.split(" ".join(value.split()), maxsplit=1)[0]
    return clip(sentence, limit)


def strongest_opinion(comparison: Comparison) -> Opinion | None:
    """The review furthest from the comparison's mean score.

    Not simply the highest score: panels mostly agree, and a 90 among 85s says little, while the one seat
    that scores 40 where the others give 80 is the line that makes a reader open the full verdict. Ties go
    to the higher score, then to page order. Reviews without text cannot be quoted.
    """
    reviews = [(tool.name, review) for tool in comparison.tools for review in tool.reviews if review.text.strip()]
    if not reviews:
        return None
    mean = sum(review.score for _, review in reviews) / len(reviews)
    tool, review = max(reviews, key=lambda pair: (abs(pair[1].score - mean), pair[1].score))
    return Opinion(tool=tool, review=review, quote=first_sentence(review.text))


def issue_label(week: str, issue_date: date) -> str:
    """ "Week 48 · 26 November 2026" (English month names whatever the process locale)."""
    number = week.rpartition("W")[2].lstrip("0") or str(issue_date.isocalendar().week)
    return f"Week {number} · {issue_date.day} {_MONTHS[issue_date.month - 1]} {issue_date.year}"


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

    env.globals["para"] = para
    return env


class Renderer:
    def __init__(self, *, settings: Settings, links: Links, env: jinja2.Environment | None = None):
        self.settings = settings
        self.links = links
        self.env = env or make_environment()

    def render_segment(
        self, *, week: str, issue_date: date, comparisons: Sequence[Comparison], more_count: int, audience: str,
        web: bool = False,
    ) -> RenderedEmail:
        """Render what every recipient of one segment gets, with their per-recipient values as tags.

        ``comparisons`` are ranked and capped by the caller, tools and reviews loaded; ``more_count`` is how
        many more comparisons the issue has for these readers; ``audience`` says why they get it.
        ``web``: the page for anyone (the archive), with no tag and nothing per recipient; its ``text`` is
        empty, since the text part exists for mail clients only.
        """
        if not comparisons:
            raise ValueError("render_segment: no comparisons to show (a segment with nothing to show gets no email)")
        context = self._context(week=week, issue_date=issue_date, comparisons=comparisons,
                                more_count=more_count, audience=audience)
        if web:
            context.update(self._web_context(comparisons))
        mjml = self._render(MJML_TEMPLATE, context)
        try:
            html = mjml2html(mjml)
        except Exception as exc:  # mjml-python raises plain exceptions with a parser message
            raise RenderError(f"{MJML_TEMPLATE}: the rendered MJML did not compile: {exc}") from exc
        return RenderedEmail(
            subject=one_line(self._render(SUBJECT_TEMPLATE, context)),
            html=html,
            text="" if web else self._render(TEXT_TEMPLATE, context),
            mjml=mjml,
        )

    def _render(self, name: str, context: dict) -> str:
        try:
            return self.env.get_template(name).render(context)
        except jinja2.TemplateError as exc:
            raise RenderError(f"{name}: {exc}") from exc

    def _context(self, *, week, issue_date, comparisons, more_count, audience) -> dict:
        shown = [Shown(comparison=c, link=self._click(c.url), opinion=strongest_opinion(c)) for c in comparisons]
        total = len(shown) + more_count
        return dict(
            week=week,
            issue_label=issue_label(week, issue_date),
            shown=shown,
            more_count=more_count,
            total=total,
            audience=audience or "all categories",
            preheader=self._preheader(shown, total),
            settings=self.settings,
            site_link=self._click(self.settings.site_url),
            archive_url=Tagged(self.links.archive(week)),
            unsubscribe_url=Tagged(self.links.unsubscribe()),
            preferences_url=Tagged(self.links.preferences()),
            open_pixel_url=Tagged(self.links.open_pixel()),
            name_html=Tagged(NAME_HTML_TAG),
            name_text=Tagged(NAME_TEXT_TAG),
            web=False,
        )

    def _web_context(self, comparisons: Sequence[Comparison]) -> dict:
        """What changes for the web version: plain links, a neutral greeting, a subscribe link."""
        shown = [Shown(comparison=c, link=Tagged(self._direct(c.url)), opinion=strongest_opinion(c))
                 for c in comparisons]
        return dict(
            web=True,
            shown=shown,
            site_link=Tagged(self._direct(self.settings.site_url)),
            subscribe_url=Tagged(f"{self.links.base_url}/subscribe"),
            unsubscribe_url=None,
            preferences_url=None,
            open_pixel_url=None,
            name_html="there",
            name_text="there",
        )

    def _direct(self, url: str) -> str:
        """A link straight to its target, for the web version; only http(s) ever reaches an href.

        The email's click redirect refuses any other scheme; here the same rule falls back to the site.
        """
        return url if url.startswith(("https://", "http://")) else self.settings.site_url

    def _click(self, url: str) -> Tagged:
        return Tagged(self.links.click(url))

    @staticmethod
    def _preheader(shown: list[Shown], total: int) -> str:
        """ "3 new verdicts: X vs Y, A vs B, and 1 more" — plain text, short enough for an inbox preview."""
        noun = "verdict" if total == 1 else "verdicts"
        titles = ", ".join(one_line(item.comparison.title, 80) for item in shown)
        extra = total - len(shown)
        return one_line(f"{total} new {noun}: {titles}" + (f", and {extra} more" if extra else ""), PREHEADER_MAX)
