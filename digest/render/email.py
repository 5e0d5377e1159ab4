"""Render one segment of an issue: Jinja2 (autoescaped) → MJML → HTML, plus a subject and a plain-text part.

A segment is rendered once for all of its recipients, so nothing personal is rendered here: per-recipient
values (open pixel, unsubscribe and preference URLs, the reader's name) stay substitution tags that the
transport fills per recipient. Everything else comes from the store and is treated as hostile text:
`neutralize` runs on every ``{{ }}`` output so a title can neither forge a tag nor smuggle control
characters, and autoescape handles HTML. Our own tag-carrying URLs are `Tagged` and pass through as they are.

The web version (``web=True``, the archive's view-in-browser page) is the same HTML with nothing personal
and no tag at all: links go straight to the comparisons, the footer invites to subscribe instead of
carrying unsubscribe and preference links, and there is no open pixel. It is a web page, not an email shown
in a browser: a ``<main>`` landmark, no greeting, no "View in your browser" link to itself (issue 16).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date

import jinja2

from digest.claim.monthly import month_covered
from digest.config import Settings
from digest.links import NAME_HTML_TAG, NAME_TEXT_TAG, Links
from digest.render.changes import change_views
from digest.render.results import result_views
from digest.votes.results import ReaderResult
from digest.render.environment import RenderedEmail, email_environment, render_email
from digest.render.text import Tagged, first_sentence, one_line
from digest.render.verdicts import Decision, decide, opinion_lede, week_headline
from storage.records import ComparisonRecord, ReviewRecord, VerdictChangeRecord

MJML_TEMPLATE = "email/digest.mjml.j2"


TEXT_TEMPLATE = "email/digest.txt.j2"


SUBJECT_TEMPLATE = "email/digest.subject.j2"


# Gmail clips an email's HTML past ~102 KB, hiding the rest (the footer and its unsubscribe link among it)
# behind "[Message clipped]"; 90 KB leaves room for what the provider and Gmail add. `Renderer.render_segment`
# keeps every email under it.
HTML_BUDGET = 90 * 1024

# Inbox previews show 90–140 characters of the preheader.
PREHEADER_MAX = 140


_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")


@dataclass(frozen=True)
class Opinion:
    """One review quoted as the strongest opinion of a comparison, and its lede: why it matters, in the
    editor's words (`digest.render.verdicts.opinion_lede`)."""

    tool: str
    review: ReviewRecord
    quote: str
    lede: str


@dataclass(frozen=True)
class Shown:
    """A comparison as the templates show it: the stored record, its tracked link, its quoted opinion, and
    the panel's decision (`digest.render.verdicts`: the templates show it, they do not compute it)."""

    comparison: ComparisonRecord
    link: Tagged
    opinion: Opinion | None
    decision: Decision

    @classmethod
    def of(cls, comparison: ComparisonRecord, link: Tagged) -> Shown:
        return cls(comparison=comparison, link=link, opinion=strongest_opinion(comparison),
                   decision=decide(comparison))


def strongest_opinion(comparison: ComparisonRecord) -> Opinion | None:
    """The review furthest from the comparison's mean score.

    Not simply the highest score: panels mostly agree, and a 90 among 85s says little, while the one seat
    that scores 40 where the others give 80 is the line that makes a reader open the full verdict. Ties go
    to the higher score, then to page order. Reviews without text cannot be quoted.
    """
    reviews = [(tool, review) for tool in comparison.tools for review in tool.reviews if review.text.strip()]
    if not reviews:
        return None
    mean = sum(review.score for _, review in reviews) / len(reviews)
    tool, review = max(reviews, key=lambda pair: (abs(pair[1].score - mean), pair[1].score))
    return Opinion(tool=tool.name, review=review, quote=first_sentence(review.text), lede=opinion_lede(review, tool))


def web_page(html: str) -> str:
    """The email's HTML as a web page: everything in its body inside a ``<main>`` landmark (issue 16), so a
    screen reader can jump to the content. Added after compiling: MJML has no element for it, and the
    email itself needs none (a mail client shows it inside its own page)."""
    start = html.index(">", html.index("<body")) + 1
    end = html.rindex("</body>")
    return f"{html[:start]}<main>{html[start:end]}</main>{html[end:]}"


def issue_label(week: str, issue_date: date) -> str:
    """ "Week 48 · 26 November 2026" (English month names whatever the process locale)."""
    number = week.rpartition("W")[2].lstrip("0") or str(issue_date.isocalendar().week)
    return f"Week {number} · {issue_date.day} {_MONTHS[issue_date.month - 1]} {issue_date.year}"


class Renderer:
    def __init__(self, *, settings: Settings, links: Links, env: jinja2.Environment | None = None):
        self.settings = settings
        self.links = links
        self.env = env or email_environment()

    def render_segment(
        self, *, week: str, issue_date: date, comparisons: Sequence[ComparisonRecord], more_count: int, audience: str,
        web: bool = False, changes: Sequence[VerdictChangeRecord] = (), results: Sequence[ReaderResult] = (),
        monthly: bool = False,
    ) -> RenderedEmail:
        """Render what every recipient of one segment gets, with their per-recipient values as tags.

        ``comparisons`` are plain records (`storage.comparisons.load_comparisons`), ranked and capped by the
        caller; ``more_count`` is how many more comparisons the issue has for these readers; ``audience`` says
        why they get it; ``changes`` are the verdicts that changed since these readers got them (issue 16),
        ``results`` the readers' votes on the previous issue (issue 17).
        ``web``: the page for anyone (the archive), with no tag and nothing per recipient; its ``text`` is
        empty, since the text part exists for mail clients only.
        ``monthly``: the monthly edition (issue 19, ``week`` a month's label "2026-M12"): the month's best across
        the weekly issues its readers skipped, said so in the subject and the heading; it carries no verdict
        changes and no readers' results.
        """
        if not comparisons:
            raise ValueError("render_segment: no comparisons to show (a segment with nothing to show gets no email)")
        if monthly:
            changes, results = (), ()
        context = self._context(week=week, issue_date=issue_date, comparisons=comparisons,
                                more_count=more_count, audience=audience)
        if monthly:
            context.update(self._monthly_context(week, shown=context["shown"], total=context["total"]))
        if web:
            context.update(self._web_context(comparisons))
        link = (lambda url: Tagged(self._direct(url))) if web else self._click
        context["changes"] = change_views(changes, link=link, capped=not web)
        context["reader_results"] = result_views(results, link=link, capped=not web)
        templates = (SUBJECT_TEMPLATE, "" if web else TEXT_TEMPLATE, MJML_TEMPLATE)
        email = render_email(env=self.env, templates=templates, context=context)
        if web:
            return replace(email, html=web_page(email.html))
        if len(email.html.encode()) > HTML_BUDGET and len(comparisons) > 1:
            # Past the budget Gmail would clip the email, and the footer (unsubscribe) with it: the last
            # comparison shown joins "and K more" instead. Only extreme content gets here (ten long four-tool
            # verdicts with the changes and the readers' results: tests/test_render.py).
            return self.render_segment(week=week, issue_date=issue_date, comparisons=comparisons[:-1],
                                       more_count=more_count + 1, audience=audience, changes=changes, results=results,
                                       monthly=monthly)
        return email

    def _context(self, *, week, issue_date, comparisons, more_count, audience) -> dict:
        shown = [Shown.of(c, self._click(c.url)) for c in comparisons]
        total = len(shown) + more_count
        return dict(
            week=week,
            issue_label=issue_label(week, issue_date),
            shown=shown,
            more_count=more_count,
            total=total,
            headline=week_headline([item.decision for item in shown], total),
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
            vote_url=self._vote,
            web=False,
            monthly=False,
            period="this week",  # what "and K more verdicts …" counts in
        )

    def _monthly_context(self, week: str, *, shown: list[Shown], total: int) -> dict:
        """What the monthly edition says differently: which month, and that it is the best of it. Its readers
        follow no single week, so its link goes to the archive of every weekly issue, not to a page of its own."""
        month = month_covered(week)
        noun = "verdict" if total == 1 else "verdicts"
        titles = ", ".join(one_line(item.comparison.title, 80) for item in shown)
        extra = total - len(shown)
        return dict(
            monthly=True,
            month=month,
            period="this month",
            issue_label=f"Monthly edition · {month}",
            headline=f"Your month of verdicts: {month}",
            preheader=one_line(f"The month's {total} {noun}: {titles}" + (f", and {extra} more" if extra else ""),
                               PREHEADER_MAX),
            archive_url=Tagged(self.links.archive_index()),
        )

    def _web_context(self, comparisons: Sequence[ComparisonRecord]) -> dict:
        """What changes for the web version: plain links, a subscribe link (the header greets nobody)."""
        shown = [Shown.of(c, Tagged(self._direct(c.url))) for c in comparisons]
        return dict(
            web=True,
            shown=shown,
            site_link=Tagged(self._direct(self.settings.site_url)),
            subscribe_url=Tagged(f"{self.links.base_url}/subscribe"),
            unsubscribe_url=None,
            preferences_url=None,
            open_pixel_url=None,
            vote_url=None,  # a vote needs the reader's token: the web version has no reader
        )

    def _direct(self, url: str) -> str:
        """A link straight to its target, for the web version; only http(s) ever reaches an href.

        The email's click redirect refuses any other scheme; here the same rule falls back to the site.
        """
        return url if url.startswith(("https://", "http://")) else self.settings.site_url

    def _vote(self, slug: str, tool: int, choice: str) -> Tagged:
        """A reader's Ship/Skip link for tool ``tool`` (1-based) of comparison ``slug`` (issue 17): the token is
        the one substitution the email already carries, so the send's payload does not grow."""
        return Tagged(self.links.vote(slug, tool, choice))

    def _click(self, url: str) -> Tagged:
        return Tagged(self.links.click(url))

    @staticmethod
    def _preheader(shown: list[Shown], total: int) -> str:
        """ "3 new verdicts: X vs Y, A vs B, and 1 more" — plain text, short enough for an inbox preview."""
        noun = "verdict" if total == 1 else "verdicts"
        titles = ", ".join(one_line(item.comparison.title, 80) for item in shown)
        extra = total - len(shown)
        return one_line(f"{total} new {noun}: {titles}" + (f", and {extra} more" if extra else ""), PREHEADER_MAX)
