"""The monthly edition (issue 19) through the email gates the weekly one passes: strict MJML, SpamAssassin, a language,
a title and an outline of headings, contrast, no sideways scroll on a phone, and the Gmail budget; and the weekly
email is unchanged by it."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise

import pytest

from digest.render.email import HTML_BUDGET
from digest.transports.base import fill
from digest.transports.outbox import OutboxTransport
from tests.email_samples import (
    ISSUE_DATE,
    SampleIssue,
    changes_issue,
    maximal_issue,
    render_issue,
    sample_batch,
    sample_recipient,
    sample_renderer,
    typical_issue,
)
from tests.test_email_a11y import MIN_CONTRAST, Outline, contrast_table, text_pairs
from tests.test_email_screens import PHONE, horizontal_overflow, open_email, screenshot
from tests.test_email_spam import MAX_SCORE, spamassassin
from tests.test_mjml_validator import validate

MONTH = "2026-M12"


def shown(page, html: str):
    """``page`` showing ``html`` at 600 px, every request but data: and file: aborted (as the a11y gate does)."""
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("data:", "file:"))
               else route.abort())
    page.set_viewport_size({"width": 600, "height": 800})
    page.set_content(html, wait_until="load")
    return page


def render_monthly(issue: SampleIssue, renderer=None):
    renderer = renderer or sample_renderer()
    return renderer.render_segment(week=MONTH, issue_date=ISSUE_DATE, comparisons=issue.comparisons,
                                   more_count=issue.more_count, audience=issue.audience, changes=issue.changes,
                                   monthly=True)


def filled_monthly(issue: SampleIssue) -> str:
    renderer = sample_renderer()
    return fill(render_monthly(issue, renderer).html, sample_recipient(renderer).substitutions)


def test_the_monthly_edition_says_so_in_its_subject_heading_and_text():
    "subject and h1 name the month; the text says it is the month's best; no verdict changes or readers' results"
    email = render_monthly(changes_issue())
    page = Outline(email.html)
    assert email.subject.startswith("Your month of verdicts: November 2026 — ")
    assert page.headings[0] == (1, "Your month of verdicts: November 2026")
    assert page.title == "Weekly AI Tool Verdicts · Monthly edition · November 2026"
    assert "Here are the best 3 of the month's 5 verdicts" in email.text
    assert "And 2 more verdicts this month:" in email.text and "this week" not in email.text
    assert "changed" not in email.text.lower() and "https://news.example.com/archive\n" in email.text


def test_the_weekly_email_is_not_changed_by_the_monthly_option():
    "the same issue rendered without the flag and with monthly=False is the same email, byte for byte"
    issue = changes_issue()
    renderer = sample_renderer()
    plain = render_issue(issue, renderer)
    flagged = renderer.render_segment(week="2026-W48", issue_date=ISSUE_DATE, comparisons=issue.comparisons,
                                      more_count=issue.more_count, audience=issue.audience, changes=issue.changes,
                                      monthly=False)
    assert plain == flagged and "this week" in plain.text and "month" not in plain.subject


def test_a_maximal_monthly_email_stays_under_the_gmail_budget():
    "ten maximal four-tool verdicts: under 90 KB, as the weekly email"
    assert len(render_monthly(maximal_issue(4)).html.encode()) <= HTML_BUDGET


@pytest.mark.mjml_validator
@pytest.mark.parametrize("issue", [typical_issue(), maximal_issue(4)], ids=lambda issue: issue.name)
def test_the_monthly_mjml_passes_strict_validation(issue, tmp_path):
    "the monthly edition is valid MJML for the reference implementation"
    path = tmp_path / f"monthly-{issue.name}.mjml"
    path.write_text(render_monthly(issue).mjml, encoding="utf-8")
    result = validate(path)
    assert result.returncode == 0, f"mjml --validate failed on {path}:\n{result.stdout}\n{result.stderr}"


def test_spamassassin_scores_the_monthly_email_below_two(tmp_path):
    "the monthly .eml, as the outbox writes it, scores under 2.0 with SpamAssassin's local rules"
    renderer = sample_renderer()
    batch = replace(sample_batch(typical_issue()), **{field: getattr(render_monthly(typical_issue(), renderer), field)
                                                      for field in ("subject", "html", "text")})
    OutboxTransport(tmp_path / "outbox").send(batch)
    (eml,) = (tmp_path / "outbox").glob("*.eml")
    verdict = spamassassin(eml, tmp_path)
    assert verdict.score < MAX_SCORE, f"{eml.name} scores {verdict.score}.\n{verdict.listing()}"


@pytest.mark.parametrize("issue", [typical_issue(), maximal_issue(4)], ids=lambda issue: issue.name)
def test_the_monthly_html_has_a_language_a_title_and_an_outline(issue):
    "lang, a title, one h1 first, an h2 per verdict, an h3 per tool, no level skipped"
    page = Outline(filled_monthly(issue))
    levels = [level for level, _ in page.headings]
    assert page.all("html")[0].get("lang") == "en" and page.title.startswith("Weekly AI Tool Verdicts")
    assert levels.count(1) == 1 and levels[0] == 1
    assert levels.count(2) == len(issue.comparisons) and levels.count(3) == sum(map(len, issue.tool_names))
    assert not [(a, b) for a, b in pairwise(levels) if b > a + 1]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_text_of_the_monthly_email_has_contrast_of_at_least_4_5_to_1(page, scheme):
    "in both palettes every visible text of the monthly edition is at least 4.5:1 against its background"
    pairs = text_pairs(shown(page, filled_monthly(typical_issue())), scheme)
    low = {pair: found for pair, found in pairs.items() if found[0] < MIN_CONTRAST}
    assert len(pairs) >= 4 and not low, f"{scheme}: text below {MIN_CONTRAST}:1\n{contrast_table(low)}"


@pytest.mark.parametrize("issue", [typical_issue(), maximal_issue(4)], ids=lambda issue: issue.name)
def test_the_monthly_email_never_scrolls_sideways_on_a_phone(page, issue):
    "at 375 px the monthly edition fits; a screenshot is kept for a person to look at"
    open_email(page, filled_monthly(issue), PHONE)
    scroll_width, inner_width = horizontal_overflow(page)
    screenshot(page, f"monthly-{issue.name}-{PHONE}")
    assert scroll_width <= inner_width, f"the page scrolls sideways ({scroll_width} > {inner_width})"
