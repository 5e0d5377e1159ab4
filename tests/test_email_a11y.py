"""Accessibility of the digest and the welcome HTML: a language, a title, alt on every image, a real outline
of headings, dark-mode support declared, and text contrast of at least 4.5:1 in the light and the dark palette.

Contrast is measured on what a reader sees: Chromium resolves the cascade (inline styles, the style block,
the dark-mode media query) and every visible text element is checked against the background it sits on.
"""

from __future__ import annotations

from html.parser import HTMLParser

import pytest

from tests.email_samples import SampleIssue, filled_html, maximal_issue, three_and_four_tools_issue, typical_issue
from tests.welcome_samples import WELCOMES, after_an_issue, filled_welcome_html, render_welcome

# WCAG 2.x, 1.4.3 (AA) for normal text; applied to all text here, large text included.
MIN_CONTRAST = 4.5
ISSUES = [typical_issue(), three_and_four_tools_issue(), maximal_issue(4)]


class Outline(HTMLParser):
    """Start tags with their attributes, the <title> text and the h1–h6 in document order with their text."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.title = ""
        self.headings: list[tuple[int, str]] = []
        self._in: str | None = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "title" or (len(tag) == 2 and tag[0] == "h" and tag[1] in "123456"):
            self._in = tag
            if tag != "title":
                self.headings.append((int(tag[1]), ""))

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "title":
            self.title += data
        elif self._in:
            level, text = self.headings[-1]
            self.headings[-1] = (level, text + data)

    def all(self, name: str) -> list[dict]:
        return [attrs for tag, attrs in self.tags if tag == name]


def by_name(issue: SampleIssue) -> str:
    return issue.name


@pytest.mark.parametrize("issue", ISSUES, ids=by_name)
def test_html_has_a_language_a_title_and_alt_on_every_image(issue):
    """the document says its language and has a non-empty title; every image has alt text or is a 1x1 pixel"""
    page = Outline(filled_html(issue))

    assert page.all("html")[0].get("lang") == "en"
    assert page.title.strip().startswith("Weekly AI Tool Verdicts"), f"title: {page.title!r}"
    images = page.all("img")
    assert images, "no image at all: the open pixel is missing"
    for img in images:
        assert "alt" in img, f"image without alt: {img}"
        decorative = (img.get("width"), img.get("height")) == ("1", "1") or img.get("role") == "presentation" \
            or img.get("aria-hidden") == "true"
        assert img["alt"].strip() or decorative, f"empty alt on an image that is not decorative: {img}"


@pytest.mark.parametrize("issue", ISSUES, ids=by_name)
def test_headings_form_an_outline(issue):
    """one h1; an h2 per comparison with its title; an h3 per tool; no heading level is skipped"""
    headings = Outline(filled_html(issue)).headings
    levels = [level for level, _ in headings]

    assert levels.count(1) == 1 and levels[0] == 1, f"one h1 first: {levels}"
    assert [" ".join(text.split()) for level, text in headings if level == 2] == \
        [" ".join(c.title.split()) for c in issue.comparisons]
    assert levels.count(3) == sum(len(names) for names in issue.tool_names)
    skips = [(a, b) for a, b in zip(levels, levels[1:]) if b > a + 1]
    assert not skips, f"heading levels skipped: {skips}"


@pytest.mark.parametrize("sample", WELCOMES, ids=lambda sample: sample.__name__)
def test_the_welcome_has_a_language_a_title_and_an_outline(sample):
    """the welcome says its language, has a title, no image, one h1 first, an h3 per verdict and no skipped level"""
    welcome = sample()
    page = Outline(filled_welcome_html(welcome))
    levels = [level for level, _ in page.headings]
    shown = render_welcome(welcome).text.count("\n  Panel: ")

    assert page.all("html")[0].get("lang") == "en"
    assert "Weekly AI Tool Verdicts" in page.title, f"title: {page.title!r}"
    assert page.all("img") == [], "the welcome has no image (nor an open pixel: it is no delivery)"
    assert levels.count(1) == 1 and levels[0] == 1, f"one h1 first: {levels}"
    assert levels.count(3) == shown, f"an h3 per verdict shown ({shown}): {levels}"
    assert not [(a, b) for a, b in zip(levels, levels[1:]) if b > a + 1], f"heading levels skipped: {levels}"


def test_html_declares_dark_mode_support():
    """a color-scheme meta says the email supports light and dark, and a dark-mode style block exists"""
    html = filled_html(typical_issue())
    metas = {meta.get("name"): meta.get("content", "") for meta in Outline(html).all("meta")}

    assert set(metas.get("color-scheme", "").split()) == {"light", "dark"}, metas
    assert "prefers-color-scheme:dark" in html.replace(" ", "")


# -- contrast -------------------------------------------------------------------------------------------------

# Every visible element with text of its own: its colour and the colours of the backgrounds below it, from
# itself up to the first opaque one (so a translucent layer is blended as the reader sees it).
TEXT_COLOURS = """() => {
  const rgba = value => (value.match(/[\\d.]+/g) || []).map(Number).concat([1]).slice(0, 4);
  const found = [];
  for (const el of document.body.querySelectorAll('*')) {
    const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
    const style = getComputedStyle(el);
    if (!own || !el.getClientRects().length || style.visibility !== 'visible' || style.opacity === '0') continue;
    const layers = [];
    for (let node = el; node; node = node.parentElement) {
      const bg = rgba(getComputedStyle(node).backgroundColor);
      if (bg[3] > 0) layers.push(bg);
      if (bg[3] === 1) break;
    }
    found.push({where: el.tagName.toLowerCase() + (el.className ? '.' + el.className : ''),
                text: el.textContent.trim().slice(0, 40), color: rgba(style.color), layers});
  }
  return found;
}"""


def blend(top: list[float], bottom: tuple[float, float, float]) -> tuple[float, float, float]:
    alpha = top[3]
    return tuple(alpha * t + (1 - alpha) * b for t, b in zip(top[:3], bottom))


def luminance(rgb: tuple[float, float, float]) -> float:
    """WCAG relative luminance of an sRGB colour given as 0–255 channels."""
    def channel(value: float) -> float:
        c = value / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = (channel(value) for value in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: tuple[float, float, float], b: tuple[float, float, float]) -> float:
    light, dark = sorted((luminance(a), luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def hex_colour(rgb: tuple[float, float, float]) -> str:
    return "#" + "".join(f"{round(value):02x}" for value in rgb)


def text_pairs(page, scheme: str) -> dict[tuple[str, str], tuple[float, str]]:
    """{(text colour, background): (contrast, an example element)} for the page in ``scheme``."""
    page.emulate_media(color_scheme=scheme)
    pairs = {}
    for item in page.evaluate(TEXT_COLOURS):
        assert item["layers"] and item["layers"][-1][3] == 1, f"{scheme}: no opaque background under {item}"
        background = tuple(item["layers"][-1][:3])
        for layer in reversed(item["layers"][:-1]):
            background = blend(layer, background)
        colour = blend(item["color"], background)
        key = (hex_colour(colour), hex_colour(background))
        pairs.setdefault(key, (contrast(colour, background), f"{item['where']} “{item['text']}”"))
    return pairs


def contrast_table(pairs) -> str:
    rows = sorted(pairs.items(), key=lambda row: row[1][0])
    return "\n".join(f"{ratio:5.2f}:1  {fg} on {bg}  e.g. {example}" for (fg, bg), (ratio, example) in rows)


def shown(page, html: str):
    """``page`` showing ``html`` at 600 px, with every request but data: and file: aborted."""
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("data:", "file:"))
               else route.abort())
    page.set_viewport_size({"width": 600, "height": 800})
    page.set_content(html, wait_until="load")
    return page


@pytest.fixture
def digest_page(page):
    return shown(page, filled_html(typical_issue()))


# The emails whose palette is checked: the typical digest, and the welcome after an issue (before any, it is
# the same page less the verdicts' section: three of these colours).
EMAILS = {"digest": lambda: filled_html(typical_issue()), "welcome": lambda: filled_welcome_html(after_an_issue())}


@pytest.fixture(params=list(EMAILS))
def email_page(page, request):
    return shown(page, EMAILS[request.param]())


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_text_has_contrast_of_at_least_4_5_to_1(email_page, scheme):
    """in the light and in the dark palette, every visible text of the digest and of the welcome is at least
    4.5:1 against its background"""
    pairs = text_pairs(email_page, scheme)
    print(f"\n{scheme} palette, text on background:\n{contrast_table(pairs)}")
    low = {pair: found for pair, found in pairs.items() if found[0] < MIN_CONTRAST}

    assert len(pairs) >= 4, f"{scheme}: too few text colours found to be the email's palette: {pairs}"
    assert not low, f"{scheme}: text below {MIN_CONTRAST}:1\n{contrast_table(low)}"


def test_dark_mode_really_changes_the_palette(email_page):
    """under prefers-color-scheme: dark the page background is dark and the text colours differ from light"""
    light = set(text_pairs(email_page, "light"))
    dark = set(text_pairs(email_page, "dark"))
    body = email_page.evaluate("getComputedStyle(document.body).backgroundColor")

    assert luminance(tuple(float(v) for v in body[body.index("(") + 1:-1].split(",")[:3])) < 0.05, body
    assert not light & dark, f"text colours unchanged in dark mode: {light & dark}"


# The three text levels, by an element of each: a tool's name, the panel's decision line under a title, a
# tool's tagline. Each colour with the first opaque background under it.
LEVELS = """() => {
  const rgba = value => (value.match(/[\\d.]+/g) || []).map(Number).concat([1]).slice(0, 4);
  const pick = {heading: 'h3', body: 'h2 + p', muted: 'p.m.t'};
  const found = {};
  for (const [level, selector] of Object.entries(pick)) {
    const el = document.querySelector(selector);
    if (!el) continue;
    let bg = [0, 0, 0, 0];
    for (let node = el; node && bg[3] < 1; node = node.parentElement) bg = rgba(getComputedStyle(node).backgroundColor);
    found[level] = {color: rgba(getComputedStyle(el).color), background: bg, text: el.textContent.trim().slice(0, 40)};
  }
  return found;
}"""


def test_dark_mode_keeps_headings_body_and_muted_text_distinct(digest_page):
    """issue 16: in the dark palette headings, body text and muted text are three different colours (a
    ".bg div" rule once made all body text muted), each at least 4.5:1 against the background it sits on"""
    digest_page.emulate_media(color_scheme="dark")
    levels = digest_page.evaluate(LEVELS)

    assert set(levels) == {"heading", "body", "muted"}, levels
    colours = {level: hex_colour(found["color"][:3]) for level, found in levels.items()}
    assert len(set(colours.values())) == 3, f"dark palette levels not distinct: {colours}"
    for level, found in levels.items():
        ratio = contrast(found["color"][:3], found["background"][:3])
        assert ratio >= MIN_CONTRAST, f"dark {level} {colours[level]} “{found['text']}”: {ratio:.2f}:1"
    assert colours == {"heading": "#f0f6fc", "body": "#c9d1d9", "muted": "#9198a1"}
