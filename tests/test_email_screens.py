"""The digest and the welcome in a real headless Chromium at phone (375 px), email (600 px) and desktop (1024 px)
widths.

The HTML is the one a subscriber receives (substitutions filled). Nothing leaves the machine: every request
but data: and file: is aborted (the open pixel is the one that tries). Full-page screenshots are kept in
test-artifacts/email-{width}.png (name-{width}.png for the other issues, welcome-name-{width}.png for the
welcomes) for a person to look at.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.email_samples import SampleIssue, filled_html, maximal_issue, three_and_four_tools_issue, typical_issue
from tests.welcome_samples import WELCOMES, filled_welcome_html

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PHONE, EMAIL, DESKTOP = 375, 600, 1024
# Headings of one row may sit a pixel or two apart (different line boxes); more is not side by side.
SAME_ROW_PX = 4


def open_email(page, html: str, width: int) -> list[str]:
    """Show ``html`` at ``width`` px with the network blocked; returns the URLs that were blocked."""
    blocked: list[str] = []

    def only_local(route):
        if route.request.url.startswith(("data:", "file:")):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    page.set_viewport_size({"width": width, "height": 800})
    page.set_content(html, wait_until="load")
    return blocked


def horizontal_overflow(page) -> tuple[int, int]:
    return page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")


def heading_boxes(page, names: list[str]) -> list[dict]:
    """The box of the h3 of each tool named, in order (the tool-name headings of one comparison)."""
    boxes = page.evaluate(
        """names => names.map(name => {
             const h = [...document.querySelectorAll('h3')].find(h => h.textContent.trim() === name);
             if (!h) return null;
             const r = h.getBoundingClientRect();
             return {top: r.top + scrollY, bottom: r.bottom + scrollY, left: r.left, right: r.right};
           })""",
        names,
    )
    missing = [name for name, box in zip(names, boxes) if box is None]
    assert not missing, f"no h3 for the tools {missing}"
    return boxes


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.mark.parametrize("width", [PHONE, EMAIL, DESKTOP])
def test_typical_issue_fits_every_width_and_keeps_a_screenshot(page, width):
    """a typical issue of three comparisons shows without horizontal scroll at 375, 600 and 1024 px"""
    blocked = open_email(page, filled_html(typical_issue()), width)

    scroll_width, inner_width = horizontal_overflow(page)
    path = screenshot(page, f"email-{width}")

    assert scroll_width <= inner_width, f"{width} px: the page scrolls sideways ({scroll_width} > {inner_width})"
    assert path.stat().st_size > 10_000, f"{path} is nearly empty"
    assert any("/o/" in url for url in blocked), f"the open pixel was not requested, or not blocked: {blocked}"


@pytest.mark.parametrize("width", [EMAIL, DESKTOP])
def test_tools_of_a_comparison_sit_side_by_side_on_wide_screens(page, width):
    """at 600 and 1024 px the two tools of each comparison are in one row: same top, second to the right"""
    issue = typical_issue()
    open_email(page, filled_html(issue), width)

    for names in issue.tool_names:
        first, second = heading_boxes(page, names)
        assert abs(first["top"] - second["top"]) <= SAME_ROW_PX, f"{width} px, {names}: not on one row {first} {second}"
        assert second["left"] >= first["right"] - 1, f"{width} px, {names}: second tool not right of the first"


def test_tools_of_a_comparison_stack_on_a_phone(page):
    """at 375 px each comparison's second tool starts below the first tool's heading, full width"""
    issue = typical_issue()
    open_email(page, filled_html(issue), PHONE)

    for names in issue.tool_names:
        first, second = heading_boxes(page, names)
        assert second["top"] >= first["bottom"], f"{names}: not stacked {first} {second}"
        assert abs(first["left"] - second["left"]) <= 1, f"{names}: stacked tools are not aligned {first} {second}"


@pytest.mark.parametrize("issue", [maximal_issue(2), maximal_issue(4), three_and_four_tools_issue()],
                         ids=lambda issue: issue.name)
def test_long_and_wide_issues_never_scroll_sideways_on_a_phone(page, issue: SampleIssue):
    """ten comparisons of maximal texts (2 and 4 tools), and 3- and 4-tool comparisons, fit 375 px"""
    # Their size budget (90 KB, and what happens past it) is
    # test_render.py::test_ten_maximal_comparisons_stay_under_gmails_clipping_budget.
    open_email(page, filled_html(issue), PHONE)

    scroll_width, inner_width = horizontal_overflow(page)
    screenshot(page, f"{issue.name}-{PHONE}")

    assert scroll_width <= inner_width, f"{issue.name}: the page scrolls sideways ({scroll_width} > {inner_width})"


def test_the_dark_palette_fits_and_keeps_a_screenshot(page):
    """in dark mode the typical issue still fits 600 px, on a dark page (test-artifacts/email-600-dark.png)"""
    page.emulate_media(color_scheme="dark")
    open_email(page, filled_html(typical_issue()), EMAIL)

    scroll_width, inner_width = horizontal_overflow(page)
    screenshot(page, f"email-{EMAIL}-dark")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")

    assert scroll_width <= inner_width, f"dark: the page scrolls sideways ({scroll_width} > {inner_width})"
    assert background == "rgb(13, 17, 23)", background


@pytest.mark.parametrize("width", [PHONE, EMAIL])
def test_each_comparison_ends_with_a_filled_button(page, width):
    """every 'Read the full verdict' is a filled blue box a thumb can hit (≥ 40 px high), one per comparison"""
    issue = typical_issue()
    open_email(page, filled_html(issue), width)

    buttons = filled_buttons(page, "Read the full verdict")

    assert len(buttons) == len(issue.comparisons), buttons
    for button in buttons:
        assert button["height"] >= 40 and button["width"] >= 150, f"{width} px: a button too small {button}"
        assert button["fill"] == "rgb(29, 78, 216)", f"{width} px: the button's cell is not filled {button}"


def filled_buttons(page, label: str) -> list[dict]:
    """Every link reading ``label``: its size and the fill of the cell around it (an mj-button's)."""
    return page.evaluate(
        """label => [...document.querySelectorAll('a')].filter(a => a.textContent.trim() === label)
             .map(a => { const r = a.getBoundingClientRect();
                         return {height: r.height, width: r.width, fill: getComputedStyle(a.closest('td')).backgroundColor}; })""",
        label)


@pytest.mark.parametrize("width", [PHONE, EMAIL, DESKTOP])
@pytest.mark.parametrize("sample", WELCOMES, ids=lambda sample: sample.__name__)
def test_the_welcome_fits_every_width_and_keeps_a_screenshot(page, sample, width):
    """the welcome (after an issue, before any, with the longest titles) shows without horizontal scroll at 375,
    600 and 1024 px, requests nothing, and its preferences button is a filled box a thumb can hit"""
    welcome = sample()
    blocked = open_email(page, filled_welcome_html(welcome), width)

    scroll_width, inner_width = horizontal_overflow(page)
    screenshot(page, f"welcome-{welcome.name}-{width}")
    [button] = filled_buttons(page, "Manage my preferences")

    assert scroll_width <= inner_width, f"{welcome.name}, {width} px: scrolls sideways ({scroll_width} > {inner_width})"
    assert blocked == [], f"{welcome.name}: a welcome has no pixel and no image, yet it requested {blocked}"
    assert button["height"] >= 40 and button["width"] >= 150, f"{width} px: the button is too small {button}"
    assert button["fill"] == "rgb(29, 78, 216)", f"{width} px: the button's cell is not filled {button}"


def test_the_welcome_in_the_dark_palette_fits_on_a_dark_page(page):
    """in dark mode the welcome still fits 375 px, on a dark page (test-artifacts/welcome-375-dark.png)"""
    page.emulate_media(color_scheme="dark")
    open_email(page, filled_welcome_html(WELCOMES[0]()), PHONE)

    scroll_width, inner_width = horizontal_overflow(page)
    screenshot(page, f"welcome-{PHONE}-dark")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")

    assert scroll_width <= inner_width, f"dark: the page scrolls sideways ({scroll_width} > {inner_width})"
    assert background == "rgb(13, 17, 23)", background
