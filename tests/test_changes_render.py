"""Verdicts that changed (issue 16, item 3) as readers of the original get them: the exact lines of the text
part, the section in the HTML and the web version, its cap, its byte cost, and the gates every digest passes
(strict MJML, SpamAssassin, Chromium widths, contrast) run on issues that carry it."""

from __future__ import annotations

from dataclasses import replace
from html.parser import HTMLParser
from itertools import cycle

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from digest.render.changes import MAX_CHANGES_SHOWN, MAX_TOOLS_SHOWN, change_views, majority, minds_line, week_words
from digest.render.text import Tagged
from digest.render.verdicts import Tally
from digest.transports.outbox import OutboxTransport
from storage.records import MindChange
from tests.email_samples import (ISSUE_DATE, WEEK, changed_verdict, changes_issue, filled_html, make_comparison,
                                 maximal_changes, maximal_changes_issue, maximal_issue, render_issue, sample_batch,
                                 sample_renderer, typical_changes)
from tests.test_email_a11y import MIN_CONTRAST, Outline, contrast_table, text_pairs
from tests.test_email_spam import MAX_SCORE, spamassassin
from tests.test_mjml_validator import validate
from tests.test_text_part import column0, hostile

# The section's share of the 90 KB budget (issue 16); past the budget the renderer shows one comparison fewer.
SECTION_BUDGET = 4000
PHONE, EMAIL, DESKTOP = 375, 600, 1024


def render(changes, *, web: bool = False, comparisons=None, renderer=None):
    renderer = renderer or sample_renderer()
    return renderer.render_segment(week=WEEK, issue_date=ISSUE_DATE, comparisons=comparisons or [make_comparison()],
                                   more_count=0, audience="Writing", web=web, changes=changes)


def section(text: str) -> str:
    """The text part's section: from its heading to the footer's rule."""
    start = text.index("VERDICTS THAT CHANGED")
    return text[start:text.index("\n" + "=" * 72, start)]


# -- the text part --------------------------------------------------------------------------------------------

def test_the_text_part_reads_exactly():
    "two comparisons changed: tallies and ship % before → after, who changed, who joined and who left"
    links = sample_renderer().links
    text = render(typical_changes()).text

    assert section(text) == f"""VERDICTS THAT CHANGED

  You read these verdicts when we first sent them; the panel has changed its
  mind since.

  Cellmind vs Quillbot (first sent in Week 44)
    Cellmind: ship → skip
    Panel: 3 ship / 1 skip → 1 ship / 3 skip (75% → 25% ship)
    Skeptic, Builder: ship → skip

    Quillbot: split → ship
    Panel: 2 ship / 2 skip → 3 ship / 1 skip (50% → 75% ship)
    Founder joined: ship · Futurist left

Read the updated verdict:
{links.click("https://verdicts.example.com/compare/changed-1")}

  Flowdesk vs Taskweaver (first sent in Week 45)
    Flowdesk: still ship
    Panel: 4 ship / 0 skip → 3 ship / 1 skip (90% → 60% ship)
    Skeptic: ship → skip

Read the updated verdict:
{links.click("https://verdicts.example.com/compare/changed-2")}
"""
    assert text.index("Read the full verdict:") < text.index("VERDICTS THAT CHANGED") < text.index("Unsubscribe:")


def test_without_a_ship_percentage_or_minds_the_lines_are_left_out():
    "a record without ship % and without named seats: the tallies alone, no empty line"
    text = section(render([changed_verdict(pct=(None, 75), minds=())]).text)

    assert "    Cellmind: ship → skip\n    Panel: 3 ship / 1 skip → 1 ship / 3 skip\n\nRead the updated" in text


def test_the_words_of_a_change():
    "majority in words (split on a tie), changes grouped in order met, weeks as readers saw them"
    assert [majority(Tally(3, 1)), majority(Tally(1, 3)), majority(Tally(2, 2)), majority(Tally(0, 0))] == \
        ["ship", "skip", "split", "split"]
    minds = (MindChange("Skeptic", "ship", "skip"), MindChange("Founder", None, "skip"),
             MindChange("Builder", "ship", "skip"), MindChange("Futurist", "skip", None))
    assert minds_line(minds) == "Skeptic, Builder: ship → skip · Founder joined: skip · Futurist left"
    assert [week_words("2026-W44"), week_words("2026-W05"), week_words("soon")] == ["Week 44", "Week 5", "soon"]


def test_two_tools_of_one_comparison_are_one_entry_in_first_seen_order():
    "records c1 tool A, c2, c1 tool B: c1 first with both tools under one title, then c2"
    changes = [changed_verdict(1), changed_verdict(2, title="Flowdesk vs Taskweaver", tool="Flowdesk"),
               changed_verdict(1, tool="Quillbot")]
    text = section(render(changes).text)

    assert text.count("Cellmind vs Quillbot") == 1 and text.count("Read the updated verdict:") == 2
    assert text.index("Cellmind vs Quillbot") < text.index("    Cellmind:") < text.index("    Quillbot:") \
        < text.index("Flowdesk vs Taskweaver")


@pytest.mark.parametrize("tools, shown", [([1] * 5, MAX_CHANGES_SHOWN), ([2, 2, 2, 1], 3), ([4, 4], 1),
                                          ([2, 4, 1], 2)])
def test_the_section_is_capped_and_says_how_many_more(tools, shown):
    "at most 3 comparisons and 6 tools' lines, whole comparisons in order; the rest: 'And N more verdicts changed'"
    changes = [changed_verdict(index, tool=f"Tool {position}") for index, count in enumerate(tools, 1)
               for position in range(count)]
    email = render(changes)
    site_link = sample_renderer().links.click(sample_renderer().settings.site_url)
    more = len(tools) - shown

    assert section(email.text).count("Read the updated verdict:") == shown
    assert f"\n\nAnd {more} more {'verdict' if more == 1 else 'verdicts'} changed:\n{site_link}\n" in email.text
    assert f'<a href="{site_link}">And {more} more' in email.html
    assert sum(tools[:shown]) <= MAX_TOOLS_SHOWN


def test_uncapped_views_show_every_change():
    "capped=False (for the web version, which no mail client clips): every comparison, no 'more' line"
    changes = [changed_verdict(index, tool=f"Tool {position}") for index in range(1, 6) for position in range(4)]
    views = change_views(changes, link=Tagged, capped=False)

    assert [len(view.tools) for view in views.shown] == [4] * 5 and (views.more_count, views.more) == (0, "")


def test_without_changes_there_is_no_section():
    "no record: the email is exactly the one rendered without the argument"
    renderer = sample_renderer()
    without = renderer.render_segment(week=WEEK, issue_date=ISSUE_DATE, comparisons=[make_comparison()],
                                      more_count=0, audience="Writing")
    empty = render((), renderer=renderer)

    assert (empty.text, empty.html) == (without.text, without.html)
    assert "VERDICTS THAT CHANGED" not in empty.text and "Verdicts that changed" not in empty.html


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(hostile, min_size=1, max_size=20))
def test_stored_text_in_the_section_never_writes_a_line_of_its_own(texts):
    "any title, tool name, seat or week in a change: column 0 holds exactly the lines of plain changes"
    texts = cycle(texts)
    forged = [replace(record, title=next(texts), tool=next(texts), original_week=next(texts),
                      minds=tuple(replace(mind, persona=next(texts)) for mind in record.minds))
              for record in typical_changes()]

    assert column0(render(forged).text) == column0(render(typical_changes()).text)


# -- the HTML and the web version -----------------------------------------------------------------------------

class Links(HTMLParser):
    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs.append(dict(attrs)["href"])


def test_the_html_section_follows_the_comparisons_under_its_h2():
    "one h1, the comparisons' h2s, then 'Verdicts that changed'; no heading level skipped; the footer after it"
    issue = changes_issue()
    html = filled_html(issue)
    headings = Outline(html).headings

    assert [" ".join(text.split()) for level, text in headings if level == 2] == \
        [c.title for c in issue.comparisons] + ["Verdicts that changed"]
    assert [level for level, _ in headings].count(1) == 1
    assert not [(a, b) for (a, _), (b, _) in zip(headings, headings[1:]) if b > a + 1]
    assert html.index("Verdicts that changed") < html.index("You get this because")
    assert "You read these verdicts when we first sent them" in html
    assert "<b>Cellmind: ship → skip</b><br />Panel: 3 ship / 1 skip → 1 ship / 3 skip (75% → 25% ship)" in html


def test_links_are_tracked_in_the_email_and_direct_on_the_web():
    "the title links through the signed click redirect in the email, straight to the comparison on the web"
    renderer = sample_renderer()
    url = "https://verdicts.example.com/compare/changed-1"
    email, web = render(typical_changes(), renderer=renderer), render(typical_changes(), web=True, renderer=renderer)

    assert renderer.links.click(url) in Links(email.html).hrefs and url not in Links(email.html).hrefs
    assert url in Links(web.html).hrefs and renderer.links.click(url) not in Links(web.html).hrefs
    assert "These verdicts went out in earlier issues" in web.html and "You read these" not in web.html
    bad = render([changed_verdict(url="javascript:alert(1)")], web=True, renderer=renderer)
    assert "javascript:" not in bad.html


def test_hostile_stored_text_is_escaped_and_never_a_tag():
    "a title with markup and a seat with a substitution tag are text in the HTML, not markup or a tag"
    title = '<script>alert(1)</script> "x" & <b>bold</b>'
    email = render([changed_verdict(title=title, tool="<img src=x onerror=alert(1)>",
                                    minds=(MindChange("[%t%]", "ship", "skip"),))])

    assert "<script>" not in email.html and "<img src=x" not in email.html and "<b>bold" not in email.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in email.html
    assert "[%t%]: ship" not in email.html and "[\u200b%t%]: ship → skip" in email.html
    assert "[\u200b%t%]: ship → skip" in email.text


# -- the byte budget and the gates ----------------------------------------------------------------------------

@pytest.mark.parametrize("comparisons, tools", [(5, 2), (5, 4), (5, 1), (1, 4)])
def test_the_section_adds_at_most_4000_bytes_to_ten_maximal_comparisons(comparisons, tools):
    """the contract's longest texts, every seat changing its mind: the section costs at most 4,000 bytes of HTML
    (measured beside ten maximal two-tool comparisons: beside four-tool ones the email would be past the
    budget and show one comparison fewer, tests/test_render.py)"""
    base = maximal_issue(2)
    cost = len(render_issue(replace(base, changes=maximal_changes(comparisons, tools=tools))).html.encode()) \
        - len(render_issue(base).html.encode())
    print(f"\nchanges section, {comparisons} comparisons of {tools} changed tools: {cost} bytes")

    assert 2000 < cost <= SECTION_BUDGET


@pytest.mark.mjml_validator
@pytest.mark.parametrize("issue", [changes_issue, maximal_changes_issue], ids=lambda f: f.__name__)
def test_issues_with_changes_pass_strict_mjml_validation(issue, tmp_path):
    "the section is valid MJML for the reference implementation (strict)"
    path = tmp_path / "changes.mjml"
    path.write_text(render_issue(issue()).mjml, encoding="utf-8")
    result = validate(path)

    assert result.returncode == 0, f"mjml --validate failed:\n{result.stdout}\n{result.stderr}"


def test_spamassassin_scores_an_issue_with_changes_below_two(tmp_path):
    "the .eml of an issue with the section, as the outbox writes it, scores under 2.0 with local rules"
    OutboxTransport(tmp_path / "outbox").send(sample_batch(changes_issue()))
    (eml,) = (tmp_path / "outbox").glob("*.eml")
    verdict = spamassassin(eml, tmp_path)
    print("\n" + verdict.listing())

    assert verdict.score < MAX_SCORE, verdict.listing()


def show(page, html: str, width: int) -> tuple[int, int]:
    """``html`` at ``width`` px, nothing fetched from the network; (scroll width, viewport width)."""
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("data:", "file:"))
               else route.abort())
    page.set_viewport_size({"width": width, "height": 800})
    page.set_content(html, wait_until="load")
    return tuple(page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]"))


@pytest.mark.parametrize("issue, width", [(changes_issue, PHONE), (changes_issue, EMAIL), (changes_issue, DESKTOP),
                                          (maximal_changes_issue, PHONE), (maximal_changes_issue, DESKTOP)])
def test_the_section_never_scrolls_sideways(page, issue, width):
    "an issue with changes, typical and maximal, fits 375, 600 and 1024 px in Chromium"
    scroll_width, inner_width = show(page, filled_html(issue()), width)

    assert scroll_width <= inner_width, f"{width} px: the page scrolls sideways ({scroll_width} > {inner_width})"


# The section's three text levels in the dark palette, by an element of each.
SECTION_LEVELS = """() => {
  const h2 = [...document.querySelectorAll('h2')].find(h => h.textContent.includes('Verdicts that changed'));
  const tool = [...document.querySelectorAll('p')].find(p => p.textContent.startsWith('Cellmind: ship'));
  const minds = [...document.querySelectorAll('p.m')].find(p => p.textContent.startsWith('Skeptic, Builder'));
  return [h2, tool, minds].map(el => el && getComputedStyle(el).color);
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_text_of_an_issue_with_changes_has_contrast_of_4_5_to_1(page, scheme):
    "light and dark: every visible text, the section's included, is at least 4.5:1; dark keeps three levels"
    show(page, filled_html(changes_issue()), EMAIL)
    pairs = text_pairs(page, scheme)
    low = {pair: found for pair, found in pairs.items() if found[0] < MIN_CONTRAST}

    assert not low, f"{scheme}: text below {MIN_CONTRAST}:1\n{contrast_table(low)}"
    if scheme == "dark":
        assert page.evaluate(SECTION_LEVELS) == ["rgb(240, 246, 252)", "rgb(201, 209, 217)", "rgb(145, 152, 161)"]
