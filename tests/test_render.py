"""The digest email: subject, HTML (MJML via mjml-python) and text part, rendered once per segment."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date
from html.parser import HTMLParser

import jinja2.filters
import pytest
from hypothesis import given, settings as hypothesis_settings, strategies as st

from digest.config import Settings
from digest.links import NAME_HTML_TAG, NAME_TEXT_TAG, TOKEN_TAG, Links, Signer
from digest.render.email import Renderer, strongest_opinion
from digest.render.verdicts import opinion_lede
from digest.render.environment import RenderedEmail, email_environment
from digest.render.text import neutralize
from digest.transports.base import fill
from storage.records import ReviewRecord, ToolRecord
from digest.votes.results import ReaderResult
from tests.email_samples import SEATS, long_comparison, make_comparison, maximal_changes, with_review, with_tools  # the builders live in email_samples

GMAIL_BUDGET = 92160  # 90 KB: Gmail clips HTML past ~102 KB
# A score bar: a table of one empty cell, its width the score (tools.mjml.j2). It carries no role: every browser
# engine already takes a one-cell table for layout (Chromium's accessibility tree: LayoutTable), and the
# attribute cost 3.2 KB at ten comparisons of four tools.
BAR = re.compile(r'<table width="\d+%"><tr><td></td></tr></table>')


@pytest.fixture
def settings() -> Settings:
    return Settings(secret_key="x" * 32, base_url="https://news.example.com")


@pytest.fixture
def links(settings) -> Links:
    return Links(base_url=settings.base_url, signer=Signer("x" * 32))


@pytest.fixture
def renderer(settings, links) -> Renderer:
    return Renderer(settings=settings, links=links)


def render(renderer: Renderer, comparisons, *, more_count: int = 0, audience: str = "all categories") -> RenderedEmail:
    return renderer.render_segment(week="2026-W48", issue_date=date(2026, 11, 26), comparisons=comparisons,
                                   more_count=more_count, audience=audience)


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text of h1/h2/h3."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.headings: list[tuple[str, str]] = []
        self._open: str | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in ("h1", "h2", "h3"):
            self._open = tag
            self.headings.append((tag, ""))

    def handle_endtag(self, tag):
        if tag == self._open:
            self._open = None

    def handle_data(self, data):
        if self._open:
            tag, text = self.headings[-1]
            self.headings[-1] = (tag, text + data)

    def all(self, name):
        return [attrs for tag, attrs in self.tags if tag == name]


def parse(html: str) -> Elements:
    parser = Elements()
    parser.feed(html)
    return parser


# -- the parts ------------------------------------------------------------------------------------------------

def test_one_render_yields_subject_html_and_text(renderer):
    """one segment of three comparisons renders once into a subject, an HTML part, a text part and its MJML"""
    email = render(renderer, [make_comparison(i) for i in range(3)])

    assert email.subject == "Tool A0 vs Tool B0 — and 2 more verdicts"
    assert email.html.startswith("<!doctype html>")
    assert "Weekly AI Tool Verdicts" in email.html and "Week 48 · 26 November 2026" in email.html
    assert email.mjml.lstrip().startswith("<mjml")
    assert "WEEKLY AI TOOL VERDICTS" in email.text and "Week 48 · 26 November 2026" in email.text


def test_subject_counts_the_comparisons_not_shown(renderer):
    """the subject names the top comparison and counts every other one, shown or not"""
    assert render(renderer, [make_comparison()]).subject == "Tool A0 vs Tool B0"
    assert render(renderer, [make_comparison()], more_count=1).subject == "Tool A0 vs Tool B0 — and 1 more verdict"


def test_html_is_accessible(renderer):
    """the HTML has a language, presentation tables (a score bar's one cell is layout anyway), alt on every
    image, an h2 per comparison, h3 per tool"""
    comparisons = [make_comparison(i) for i in range(3)]
    email = render(renderer, comparisons)
    page = parse(email.html)

    assert page.all("html")[0].get("lang") == "en"
    without_role = [t for t in page.all("table") if t.get("role") != "presentation"]
    assert len(without_role) == len(BAR.findall(email.html)) == 3 * 2 * 4  # the score bars, and only they
    assert page.all("img") and all("alt" in img for img in page.all("img"))
    h2s = [text.strip() for tag, text in page.headings if tag == "h2"]
    assert h2s == [c.title for c in comparisons]
    assert len([tag for tag, _ in page.headings if tag == "h3"]) == 6
    assert len([tag for tag, _ in page.headings if tag == "h1"]) == 1
    assert "<title>Weekly AI Tool Verdicts · Week 48 · 26 November 2026</title>" in email.html


def test_html_declares_light_and_dark_colour_schemes(renderer):
    """clients are told the email supports dark mode and get dark colours for it"""
    html = render(renderer, [make_comparison()]).html
    metas = {m.get("name"): m.get("content") for m in parse(html).all("meta")}
    assert metas.get("color-scheme") == "light dark"
    assert metas.get("supported-color-schemes") == "light dark"
    assert "@media (prefers-color-scheme:dark)" in html


def test_preheader_lists_the_verdicts_in_plain_text(renderer):
    """the inbox preview says how many verdicts and names them"""
    html = render(renderer, [make_comparison(i) for i in range(2)], more_count=1).html
    assert "3 new verdicts: Tool A0 vs Tool B0, Tool A1 vs Tool B1, and 1 more" in html


def test_each_tool_shows_price_panel_and_written_verdicts(renderer):
    """every tool shows its entry price, the panel tally, and each seat's score as a bar, in digits and its
    verdict in words"""
    html = render(renderer, [make_comparison()]).html
    assert html.count("$20/mo") == 2 and html.count("Panel: 3 ship / 1 skip") == 2
    for seat, score, verdict in zip(SEATS, (85, 78, 82, 55), ("ship", "ship", "ship", "skip")):
        bar = f'<table width="{score}%"><tr><td></td></tr></table></td>'
        assert html.count(f'{bar}<td class="{verdict}">{score} {verdict}</td>') == 2, seat
        assert html.count(f"<td>{seat}</td>") == 2


def test_score_bars_are_tables_with_widths_aligned_by_the_first_row(renderer):
    """a bar is a table whose width attribute is the score (Outlook draws it, no image); the first row of the
    seat table sets the bar column's width for every row; a score of 0 still draws a sliver"""
    html = render(renderer, [make_comparison(scores=(100, 0, 50, 7))]).html
    tables = [t.get("width") for t in parse(html).all("table") if t.get("width", "").endswith("%")]
    assert tables.count("100%") >= 2 and {"1%", "50%", "7%"} <= set(tables)
    assert html.count('<td width="46%"><table width="100%">') == 2
    assert "<img" not in html.split("<body", 1)[1].replace('<img src="' + "https://news.example.com/o/", "")


def test_each_comparison_opens_with_the_panels_decision(renderer):
    """the decision line names the pick under the title, above the tools; a tie of votes and means is a
    split panel"""
    picked = render(renderer, [with_review(make_comparison(), 1, 0, verdict="skip")]).html
    split = render(renderer, [make_comparison()]).html
    assert "</h2><p><b>Panel pick: Tool A0</b> — 3 of 4 ship vs 2 of 4</p>" in picked
    assert "</h2><p><b>Split panel</b> — 3 of 4 ship each, same mean score</p>" in split
    assert split.index("Split panel") < split.index("<h3")


def test_each_tool_shows_its_community_line(renderer):
    """the community line: the comparison's votes and the tool's ship share, or that nobody voted yet"""
    voted = with_tools(replace(make_comparison(), community_votes=57), community_ship_pct=70)
    assert render(renderer, [voted]).html.count('<p class="m">Community: 57 votes, 70% ship</p>') == 2
    assert render(renderer, [make_comparison()]).html.count('<p class="m">Community: no votes yet</p>') == 2


def test_strongest_opinion_is_the_most_divergent_seat_cut_to_one_sentence(renderer):
    """the quoted opinion is the seat furthest from the panel's mean, its first sentence only"""
    comparison = make_comparison(scores=(80, 82, 79, 30))
    opinion = strongest_opinion(comparison)
    assert (opinion.review.persona, opinion.tool) == ("Founder", "Tool A0")  # ties go to page order
    assert opinion.quote == "Founder take on tool 0."
    assert "“Founder take on tool 0.”" in render(renderer, [comparison]).html


def test_strongest_opinion_of_a_long_review_is_clipped_with_an_ellipsis():
    """a review of one endless sentence is quoted in at most 160 characters ending with an ellipsis"""
    comparison = with_review(make_comparison(), 0, 3, text="word " * 3000)
    quote = strongest_opinion(comparison).quote
    assert len(quote) <= 160 and quote.endswith("…")


def seats(*pairs: tuple[int, str]) -> ToolRecord:
    """Tool A0 with one review per (score, verdict), seats named as on the site."""
    reviews = tuple(ReviewRecord(position=i, persona=SEATS[i % 4], score=score, verdict=verdict, text="Said so.")
                    for i, (score, verdict) in enumerate(pairs))
    return replace(make_comparison().tools[0], reviews=reviews)


@pytest.mark.parametrize("pairs, quoted, lede", [
    ([(85, "ship"), (40, "skip"), (80, "ship"), (78, "ship")], 1,
     "The lone dissent: the Skeptic would skip Tool A0 (40/100) while the rest of the panel ships it."),
    ([(30, "skip"), (85, "ship"), (90, "ship"), (60, "maybe")], 0,
     "A dissent: the Builder would skip Tool A0 (30/100) while most of the panel ships it."),
    ([(35, "skip"), (30, "skip"), (72, "ship"), (25, "skip")], 2,
     "The lone dissent: the Futurist would ship Tool A0 (72/100) while the rest of the panel skips it."),
    ([(92, "ship"), (80, "ship"), (78, "ship"), (45, "skip")], 0, "The strongest case for Tool A0: the Builder, 92/100."),
    ([(60, "ship"), (30, "skip"), (41, "skip"), (35, "skip")], 1,
     "The strongest case against Tool A0: the Skeptic would skip it, 30/100."),
    ([(80, "ship"), (40, "skip"), (75, "ship"), (45, "skip")], 1,
     "The panel splits on Tool A0: the Skeptic would skip it (40/100)."),
    ([(95, "ship")], 0, "The strongest case for Tool A0: the Builder, 95/100."),
    ([(60, "maybe"), (80, "ship")], 0, "The strongest opinion on Tool A0: the Builder, 60/100."),
], ids=["lone-dissent", "dissent", "lone-ship", "for", "against", "split", "alone", "no-side"])
def test_the_opinions_lede_says_why_it_matters(pairs, quoted, lede):
    """the lede names a dissent from the tool's panel, the strongest case for or against it, or a split panel"""
    tool = seats(*pairs)
    assert opinion_lede(tool.reviews[quoted], tool) == lede


def test_the_lede_opens_each_comparison_in_the_html_and_the_text_part(renderer):
    """under the decision line, above the tools, both parts say why the quoted seat matters, then quote it"""
    comparison = with_review(make_comparison(scores=(85, 82, 80, 78), verdicts=("ship",) * 4), 1, 1,
                             score=40, verdict="skip")
    email = render(renderer, [comparison])
    lede = "The lone dissent: the Skeptic would skip Tool B0 (40/100) while the rest of the panel ships it."
    assert strongest_opinion(comparison).lede == lede
    assert f'<p class="q">{lede}<br /><i dir="auto">“Skeptic take on tool 1.”</i></p>' in email.html
    assert email.html.index(lede) < email.html.index("<h3")
    assert ("\n  The lone dissent: the Skeptic would skip Tool B0 (40/100) while the rest\n  of the panel ships it.\n"
            "    “Skeptic take on tool 1.”\n") in email.text
    assert email.text.index("The lone dissent") < email.text.index("    Tool A0\n")


def test_a_hostile_name_in_the_lede_is_clipped_and_escaped(renderer):
    """a seat or tool name carrying markup reaches the lede as clipped, escaped text in the HTML"""
    comparison = with_tools(make_comparison(), name="<b>Evil</b> " * 20)
    comparison = with_review(comparison, 0, 3, persona="<i>Seat</i> " * 10)
    lede = strongest_opinion(comparison).lede
    assert lede == ("The lone dissent: the <i>Seat</i>… would skip <b>Evil</b> <b>Evil</b> <b>Evil</b>… (55/100) "
                    "while the rest of the panel ships it.")
    html = render(renderer, [comparison]).html
    assert "<b>Evil" not in html and "<i>Seat" not in html
    assert "&lt;i&gt;Seat&lt;/i&gt;" in html


@pytest.mark.parametrize("tools", [3, 4])
def test_three_and_four_tools_each_get_a_column(renderer, tools):
    """three tools sit in three columns, four in two columns of two; every tool is shown"""
    email = render(renderer, [make_comparison(tools=tools)])
    page = parse(email.html)
    assert len([tag for tag, _ in page.headings if tag == "h3"]) == tools
    expected = "mj-column-per-33" if tools == 3 else "mj-column-per-50"
    assert expected in email.html


def test_minimal_comparison_without_prices_or_reviews_renders(renderer):
    """a comparison with no tagline, price, ship % or reviews renders without 'None' or empty tables"""
    comparison = with_tools(make_comparison(), tagline="", entry_price="", panel_ship_pct=None, reviews=())
    email = render(renderer, [comparison])
    assert "None" not in email.html and "None" not in email.text
    assert "Price not listed" in email.html and "No panel reviews yet." in email.html
    assert 'class="q"' not in email.html and "“" not in email.text


def test_the_masthead_is_text_and_the_h1_is_the_weeks_headline(renderer, links):
    """the wordmark is text (no image but the open pixel), the week beside it; the one h1 says how many
    verdicts and the clearest pick; the text part carries the same line"""
    picked = with_review(make_comparison(1), 1, 0, verdict="skip")
    email = render(renderer, [make_comparison(0), picked], more_count=1)
    page = parse(email.html)

    assert [img["src"] for img in page.all("img")] == [links.open_pixel()]
    assert 'class="wm"' in email.html and ">Weekly AI Tool Verdicts</td>" in email.html
    assert [text for tag, text in page.headings if tag == "h1"] == \
        ["3 verdicts this week — the clearest: Tool A1 over Tool B1"]
    assert "\n\n  3 verdicts this week — the clearest: Tool A1 over Tool B1\n\n" in email.text


def test_read_the_full_verdict_is_an_mj_button(renderer, links):
    """each comparison ends with an mj-button to its tracked verdict page: a filled table cell whose padding
    Outlook for Windows keeps (mso-padding-alt), the link padded for every other client"""
    email = render(renderer, [make_comparison(i) for i in range(2)])
    assert email.mjml.count("<mj-button href=") == 2
    cell = ('<td align="center" bgcolor="#1d4ed8" role="presentation" valign="middle" style="border:none;'
            'border-radius:6px;cursor:auto;mso-padding-alt:11px 20px;background:#1d4ed8;"><a href="{}"')
    for i in range(2):
        href = links.click(make_comparison(i).url).replace("&", "&amp;")
        assert email.html.count(cell.format(href)) == 1
        assert email.html.count(f'<a href="{href}"') == 1
    assert email.html.count("padding:11px 20px;mso-padding-alt:0px;") == 2
    assert email.html.count('class="btn"') == 2  # dark mode recolours the cell and its link by this class


# -- size -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("tools", [2, 4])
def test_ten_maximal_comparisons_stay_under_gmails_clipping_budget(renderer, tools):
    """ten comparisons with every text at its maximum length, each tool with its Ship/Skip links, are shown in
    full under 90 KB of HTML"""
    email = render(renderer, [long_comparison(i, tools=tools) for i in range(10)], more_count=5,
                   audience="Developer Tools and Writing")
    size = len(email.html.encode("utf-8"))
    assert size < GMAIL_BUDGET, f"{size} bytes with {tools} tools per comparison"
    assert len(parse(email.html).headings) == 1 + 10 + 10 * tools


def maximal_results(count: int) -> list[ReaderResult]:
    return [ReaderResult(comparison_id=100 + i, title=f"R{i} " + "lorem ipsum " * 30, url=f"https://x.example/r{i}",
                         tool="Tool " + "lorem " * 40, pct=62, votes=1234) for i in range(count)]


@pytest.mark.parametrize("tools, shown", [(2, 10), (4, 9)])
def test_an_email_past_the_budget_moves_its_last_comparisons_to_and_more(renderer, tools, shown):
    """ten maximal comparisons plus the longest verdict changes and readers' results: the email stays under
    90 KB (Gmail would clip the footer and its unsubscribe link), showing as many comparisons in full as fit —
    all ten of two tools, nine of four — and the rest in "and K more"."""
    email = renderer.render_segment(week="2026-W48", issue_date=date(2026, 11, 26),
                                    comparisons=[long_comparison(i, tools=tools) for i in range(10)], more_count=5,
                                    audience="Developer Tools and Writing", changes=maximal_changes(5, tools=2),
                                    results=maximal_results(6))
    size = len(email.html.encode("utf-8"))
    assert size < GMAIL_BUDGET, f"{size} bytes"
    titles = [text for tag, text in parse(email.html).headings if tag == "h2"]
    assert titles[:shown] == [long_comparison(i, tools=tools).title for i in range(shown)]
    assert titles[shown:] == ["What readers said", "Verdicts that changed"], "then the two sections' headings"
    assert f"And {5 + 10 - shown} more verdicts this week" in email.html
    assert "Verdicts that changed" in email.html and "What readers said" in email.html


# -- links and per-recipient tags -----------------------------------------------------------------------------

def test_per_recipient_values_stay_substitution_tags(renderer, links):
    """pixel, unsubscribe, preferences and greeting are tags; view-in-browser is the issue's archive page"""
    email = render(renderer, [make_comparison()])
    srcs = [img["src"] for img in parse(email.html).all("img")]
    assert links.open_pixel() in srcs
    pixel = next(img for img in parse(email.html).all("img") if img["src"] == links.open_pixel())
    assert (pixel["width"], pixel["height"], pixel["alt"]) == ("1", "1", "")
    hrefs = [a.get("href") for a in parse(email.html).all("a")]
    assert links.unsubscribe() in hrefs and links.preferences() in hrefs
    assert "https://news.example.com/archive/2026-W48" in hrefs
    assert f"Hi {NAME_HTML_TAG}," in email.html and f"Hi {NAME_TEXT_TAG}," in email.text
    assert TOKEN_TAG in links.unsubscribe()


class Parents(HTMLParser):
    """The element each start tag opens inside, as the source nests them (void elements close at once)."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.found: list[tuple[str, str, dict]] = []  # (tag, parent, attributes)

    def handle_starttag(self, tag, attrs):
        self.found.append((tag, self.stack[-1] if self.stack else "", dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.stack:
            del self.stack[len(self.stack) - 1 - self.stack[::-1].index(tag):]


def test_the_open_pixel_sits_in_a_table_cell(renderer, links):
    """the pixel <img> is the child of a <td>, never of a <tbody> (invalid HTML that sanitisers drop)"""
    parser = Parents()
    parser.feed(render(renderer, [make_comparison(i) for i in range(2)]).html)
    [(tag, parent, attrs)] = [found for found in parser.found if found[2].get("src") == links.open_pixel()]
    assert parent == "td"
    assert not [found for found in parser.found if found[0] == "img" and found[1] in ("table", "tbody", "tr")]


def test_every_link_goes_through_the_signed_click_redirect(renderer, links, settings):
    """comparison URLs never appear raw as hrefs: only /c/ click links, archive and the recipient's own pages"""
    comparisons = [make_comparison(i) for i in range(2)]
    email = render(renderer, comparisons, more_count=3)
    hrefs = [a["href"] for a in parse(email.html).all("a")]
    allowed = {links.unsubscribe(), links.preferences(), links.archive("2026-W48")}
    allowed |= {links.vote(c.slug, n, choice) for c in comparisons for n in (1, 2) for choice in ("ship", "skip")}
    for href in hrefs:
        assert href in allowed or href.startswith("https://news.example.com/c/"), href
    for comparison in comparisons:
        assert links.click(comparison.url) in hrefs
        assert comparison.url not in email.html and comparison.url not in email.text
    assert links.click(settings.site_url) in hrefs
    assert "And 3 more verdicts this week →" in email.html


def test_every_tool_shown_has_its_ship_and_skip_links_in_both_parts(renderer, links):
    """issue 17: two vote links per tool shown in full, the recipient token the email already carries, in the
    HTML and the text part; the web version (no reader) has none"""
    comparisons = [make_comparison(0), make_comparison(1, tools=4)]
    email = render(renderer, comparisons, more_count=3)
    hrefs = [a["href"] for a in parse(email.html).all("a")]
    for comparison in comparisons:
        for number in range(1, len(comparison.tools) + 1):
            for choice in ("ship", "skip"):
                url = links.vote(comparison.slug, number, choice)
                assert TOKEN_TAG in url and url.endswith(f"/{number}/{choice}")
                assert hrefs.count(url) == 1 and email.text.count(url) == 1
    web = renderer.render_segment(week="2026-W48", issue_date=date(2026, 11, 26), comparisons=comparisons,
                                  more_count=3, audience="all categories", web=True)
    assert "/v/" not in web.html


def test_click_links_read_back_to_their_target(renderer, links):
    """a click link, once filled for a recipient, verifies back to the comparison's URL"""
    email = render(renderer, [make_comparison()])
    href = next(a["href"] for a in parse(fill(email.html, {TOKEN_TAG: "tok"})).all("a") if "/c/" in a["href"])
    token = re.match(r"https://news\.example\.com/c/([^?]+)\?r=tok$", href).group(1)
    assert links.signer.read_link_token(token) == "https://verdicts.example.com/compare/tool-a-0-vs-tool-b-0"


def test_text_part_is_complete(renderer, links, settings):
    """the text part has every title, click link, the more link, archive, preferences, unsubscribe, address"""
    comparisons = [make_comparison(i) for i in range(3)]
    text = render(renderer, comparisons, more_count=2, audience="Developer Tools and Writing").text
    for comparison in comparisons:
        assert comparison.title in text
        assert links.click(comparison.url) in text
    assert "And 2 more verdicts this week:\n" + links.click(settings.site_url) in text
    assert links.archive("2026-W48") in text
    assert links.preferences() in text and links.unsubscribe() in text
    assert settings.postal_address in text
    assert "Weekly AI Tool Verdicts for:\n  Developer Tools and Writing\n" in text
    assert "      Builder     85/100  ship" in text and "      Founder     55/100  skip" in text
    assert all(len(line) <= 78 for line in text.splitlines() if "://" not in line)


def test_text_part_without_more_has_no_more_link(renderer, settings, links):
    """when every comparison is shown there is no 'more' line"""
    text = render(renderer, [make_comparison()]).text
    assert "more verdict" not in text and links.click(settings.site_url) not in text


def test_footer_says_why_and_where(renderer, settings):
    """the footer says why the reader gets this and carries the postal address"""
    html = render(renderer, [make_comparison()], audience="Developer Tools and Writing").html
    assert "You get this because you subscribed to Weekly AI Tool Verdicts for Developer Tools and Writing." in html
    assert settings.postal_address in html


# -- hostile content ------------------------------------------------------------------------------------------

HOSTILE = "<script>alert(1)</script> {{ 7*7 }} {% raw %} [%t%] -unsub- \r\nBcc: evil@example.com \x07\x1b\x85 שלום 🚀"


def test_hostile_title_is_escaped_not_executed(renderer):
    """markup, template syntax and control characters in a title come out as inert text"""
    email = render(renderer, [make_comparison(title=HOSTILE)])
    assert "<script" not in email.html and "<script" not in email.mjml
    assert "&lt;script&gt;alert(1)&lt;/script&gt; {{ 7*7 }} {% raw %}" in email.html
    assert "<script>alert(1)</script> {{ 7*7 }} {% raw %}" in email.text
    assert "-unsub-" in email.html and "שלום 🚀" in email.html and "שלום 🚀" in email.text
    for part in (email.html, email.text, email.subject):
        assert not re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]", part)


def test_a_tag_look_alike_in_a_title_is_never_substituted(renderer):
    """'[%t%]' written in a title survives the per-recipient fill unchanged, in every part"""
    email = render(renderer, [make_comparison(title=HOSTILE)])
    for part in (email.html, email.text, email.subject):
        filled = fill(part, {TOKEN_TAG: "TOKEN", NAME_HTML_TAG: "NAME", NAME_TEXT_TAG: "NAME"})
        title_at = filled.index("-unsub-")
        assert "TOKEN" not in filled[title_at - 40:title_at]
    html = fill(email.html, {TOKEN_TAG: "TOKEN"})
    assert "/u/TOKEN" in html and "/p/TOKEN" in html and "/o/TOKEN.gif" in html  # our own tags still work


def test_adjacent_values_cannot_join_into_a_tag():
    """a value ending in '[' next to one starting with '%t%]' cannot form a tag"""
    assert "[%" not in neutralize("title [") + neutralize("%t%] tail")
    assert "<%" not in neutralize("a <") + neutralize("%asm_group_unsubscribe_raw_url%>")


def test_subject_is_one_header_line(renderer):
    """a CR/LF in a title cannot split the Subject header, and long subjects are capped"""
    subject = render(renderer, [make_comparison(title=HOSTILE)]).subject
    assert "\r" not in subject and "\n" not in subject
    assert "Bcc: evil@example.com" in subject  # on the same line, as text
    long = render(renderer, [make_comparison(title="word " * 200)], more_count=3).subject
    assert len(long) <= 150 and long.endswith("— and 3 more verdicts")


def test_a_javascript_url_never_reaches_an_href(renderer):
    """even if a javascript: URL got into the store, the email only links to the signed click redirect"""
    email = render(renderer, [make_comparison(url="javascript:alert(document.cookie)")])
    hrefs = [a["href"] for a in parse(email.html).all("a")]
    assert not any(href.lower().startswith("javascript:") for href in hrefs)
    assert "javascript:" not in email.html and "javascript:" not in email.text


@hypothesis_settings(max_examples=300, deadline=None)
@given(value=st.text(st.characters(codec="utf-8"), max_size=90) | st.sampled_from(["", " ", "a ", " a", "a\tb", "x" * 76]),
       indent=st.sampled_from(["", "  "]))
def test_the_text_parts_short_paragraph_shortcut_equals_full_wrapping(value, indent):
    "para() skips wrapping a short single line; for any text it gives what wordwrap + indent of the neutralized text would"
    env = email_environment()
    full = jinja2.filters.do_indent(
        jinja2.filters.do_wordwrap(env, neutralize(value), 76 - len(indent), break_long_words=False, break_on_hyphens=False),
        indent, first=True)
    assert env.globals["para"](value, indent) == full
