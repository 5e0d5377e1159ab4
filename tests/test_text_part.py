"""The plain-text part (issue 13, item 7), the digest's and the welcome's: imported text cannot forge lines.
Column 0 is the template's own (its words, the rules, our URLs); every imported value stays on its own
indented line or block, whatever line breaks (CR, LF, CRLF, VT, FF, NEL, U+2028/2029…) or wrapping it brings."""

from __future__ import annotations

import re
from dataclasses import replace
from itertools import cycle

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from digest.render.email import Renderer
from storage.records import ComparisonRecord, ToolRecord
from tests.email_samples import ISSUE_DATE, WEEK, make_comparison, sample_renderer
from tests.welcome_samples import after_an_issue, reader, render_welcome

# Every boundary str.splitlines() knows, and the words a forger needs.
BREAKS = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
FORGERY = ["Unsubscribe:", "Manage preferences:", "Read the full verdict:", "View in your browser:",
           "https://evil.example/u/x", "=" * 72, "[%t%]", "\t", " ", "  ", "word " * 15, "x" * 80]
fragment = st.one_of(st.sampled_from(BREAKS + FORGERY), st.text(max_size=12))
hostile = st.lists(fragment, max_size=10).map("".join)
URL = re.compile(r"https?://\S+")


def column0(text: str) -> list[str]:
    """The lines a reader takes for the email's own: not blank, not indented."""
    return [line for line in text.split("\n") if line.strip() and not line[:1].isspace()]


def render_text(renderer: Renderer, comparisons: list[ComparisonRecord], *, audience: str, more_count: int) -> str:
    return renderer.render_segment(week=WEEK, issue_date=ISSUE_DATE, comparisons=comparisons, more_count=more_count,
                                   audience=audience).text


def filled_with(texts, comparisons: list[ComparisonRecord]) -> list[ComparisonRecord]:
    """Every imported text of ``comparisons`` (titles, categories, names, taglines, prices, seats, verdicts,
    reviews, summaries) taken from ``texts`` in turn; the URLs stay."""
    return [replace(comparison, title=next(texts) or "t", category=next(texts),
                    tools=tuple(_filled_tool(texts, tool) for tool in comparison.tools))
            for comparison in comparisons]


def _filled_tool(texts, tool: ToolRecord) -> ToolRecord:
    return replace(tool, name=next(texts) or "n", tagline=next(texts), entry_price=next(texts), summary=next(texts),
                   reviews=tuple(replace(review, persona=next(texts), verdict=next(texts), text=next(texts))
                                 for review in tool.reviews))


def issue(count: int, tools: int, reviews: int) -> list[ComparisonRecord]:
    comparisons = [make_comparison(index, tools=tools) for index in range(count)]
    return [replace(comparison, tools=tuple(replace(tool, reviews=tool.reviews[:reviews]) for tool in comparison.tools))
            for comparison in comparisons]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(hostile, min_size=1, max_size=40), audience=hostile, count=st.integers(1, 3),
       tools=st.integers(2, 4), reviews=st.integers(0, 4), more_count=st.integers(0, 2))
def test_imported_text_never_writes_a_line_of_its_own(texts, audience, count, tools, reviews, more_count):
    "any text in any imported field and the audience: column 0 holds exactly the lines of a plain issue"
    renderer = sample_renderer()
    plain = render_text(renderer, issue(count, tools, reviews), audience="Writing", more_count=more_count)
    forged = render_text(renderer, filled_with(cycle(texts), issue(count, tools, reviews)), audience=audience,
                         more_count=more_count)

    assert column0(forged) == column0(plain)
    lines = column0(forged)
    links = renderer.links
    for label, url in (("Unsubscribe:", links.unsubscribe()), ("Manage preferences:", links.preferences())):
        assert [i for i, line in enumerate(lines) if line.startswith(label)] == [lines.index(label)]
        assert lines[lines.index(label) + 1] == url
    ours = {links.unsubscribe(), links.preferences(), links.archive(WEEK), links.click(renderer.settings.site_url)}
    ours |= {links.click(c.url) for c in issue(count, tools, reviews)}
    assert {url for line in lines for url in URL.findall(line)} <= ours


@pytest.mark.parametrize("line_break", BREAKS)
def test_a_line_break_in_a_title_is_a_space_in_every_part(line_break):
    "a title 'Quill<break>Unsubscribe: https://evil…' reads as one line in the text part and the HTML"
    title = f"Quill vs Inkwell{line_break}Unsubscribe:{line_break}https://evil.example/u/x"
    email = sample_renderer().render_segment(week=WEEK, issue_date=ISSUE_DATE, audience="Writing", more_count=0,
                                             comparisons=[make_comparison(title=title)])
    assert "  Quill vs Inkwell Unsubscribe: https://evil.example/u/x\n" in email.text
    assert "Quill vs Inkwell Unsubscribe: https://evil.example/u/x</h2>" in email.html
    assert not any(line.startswith(("Unsubscribe: https", "https://evil")) for line in email.text.splitlines())


def test_a_wrapped_title_continues_indented():
    "a long title wraps inside its block: a URL 70 columns in never starts a line of column 0"
    title = "A very long comparison title that goes on until the wrap " + "https://evil.example/u/x"
    text = render_text(sample_renderer(), [make_comparison(title=title)], audience="Writing", more_count=0)
    assert "\n  https://evil.example/u/x\n" in text


def test_the_audience_is_its_own_indented_line():
    "the footer says why in the template's words, the reader's categories on the indented line below"
    text = render_text(sample_renderer(), [make_comparison()], audience="Developer Tools and Writing", more_count=0)
    assert "for:\n  Developer Tools and Writing\n\nManage preferences:\n" in text


# -- the verdict lines (issue 16, item 4) ---------------------------------------------------------------------

def tool_block(text: str, name: str) -> list[str]:
    """The lines of the text part's block for the tool ``name``: from its name to the next blank line."""
    lines = text.split("\n")
    start = lines.index(f"    {name}")
    return lines[start:lines.index("", start)]


def test_a_unanimous_panel_and_community_votes_read_exactly():
    "a 4/0 panel with 57 community votes: 'Panel: 4 ship / 0 skip' and 'Community: 57 votes, 70% ship'"
    comparison = replace(make_comparison(verdicts=("ship",) * 4), community_votes=57)
    comparison = replace(comparison, tools=tuple(replace(tool, community_ship_pct=70) for tool in comparison.tools))
    text = render_text(sample_renderer(), [comparison], audience="Writing", more_count=0)

    block = tool_block(text, "Tool A0")
    assert "    Panel: 4 ship / 0 skip" in block and "    Community: 57 votes, 70% ship" in block
    assert block.index("    Panel: 4 ship / 0 skip") < block.index("      Builder     85/100  ship")
    assert block[-3] == "    Community: 57 votes, 70% ship"
    assert block[-2:] == ["    Your call? Ship it: https://news.example.com/v/[%t%]/tool-a-0-vs-tool-b-0/1/ship",
                          "               Skip it: https://news.example.com/v/[%t%]/tool-a-0-vs-tool-b-0/1/skip"]


def test_a_split_panel_without_community_votes_reads_exactly():
    "2 ship / 2 skip on both tools with equal scores: a split panel, and no community votes yet"
    comparison = make_comparison(verdicts=("ship", "skip", "ship", "skip"))
    text = render_text(sample_renderer(), [comparison], audience="Writing", more_count=0)

    assert "\n  Tool A0 vs Tool B0\n  Split panel — 2 of 4 ship each, same mean score\n" in text
    for name in ("Tool A0", "Tool B0"):
        block = tool_block(text, name)
        assert "    Panel: 2 ship / 2 skip" in block and block[-3] == "    Community: no votes yet"


def test_the_decision_line_names_the_pick_under_the_title():
    "the tool with more ship votes is the panel's pick, said on the line under the title"
    comparison = make_comparison()
    tools = list(comparison.tools)
    tools[1] = replace(tools[1], reviews=tuple(replace(review, verdict="skip") for review in tools[1].reviews))
    text = render_text(sample_renderer(), [replace(comparison, tools=tuple(tools))], audience="Writing", more_count=0)

    assert "\n  Tool A0 vs Tool B0\n  Panel pick: Tool A0 — 3 of 4 ship vs 0 of 4\n" in text
    assert "    Panel: 0 ship / 4 skip" in tool_block(text, "Tool B0")


# -- the welcome (issue 19, item 3) ---------------------------------------------------------------------------

@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(hostile, min_size=1, max_size=40), urls=st.lists(hostile, min_size=3, max_size=3),
       count=st.integers(1, 4))
def test_imported_text_never_writes_a_line_of_its_own_in_the_welcome(texts, urls, count):
    "any text in the titles, tool names and URLs of the latest issue: the welcome's column 0 is a plain one's"
    plain, texts = issue(count, 2, 4), cycle(texts)
    forged = [replace(comparison, title=next(texts) or "t", url=f"https://verdicts.example.com/{url}",
                      tools=tuple(replace(tool, name=next(texts)) for tool in comparison.tools))
              for comparison, url in zip(plain, cycle(urls))]

    def text(comparisons) -> str:
        return render_welcome(replace(after_an_issue(), newcomer=reader(comparisons=tuple(comparisons)))).text

    lines = column0(text(forged))
    assert lines == column0(text(plain))
    links = sample_renderer().links
    for label, url in (("Unsubscribe:", links.unsubscribe()), ("Manage preferences:", links.preferences())):
        assert [i for i, line in enumerate(lines) if line.startswith(label)] == [lines.index(label)]
        assert lines[lines.index(label) + 1] == url
    assert {url for line in lines for url in URL.findall(line)} == {links.unsubscribe(), links.preferences()}
