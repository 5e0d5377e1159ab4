"""The preview server's layout in a real Chromium (issue 14, item 10): on a 1440 px laptop screen the plain
text stands beside the desktop frame, at least 78 columns wide, and not one of its lines wraps."""

from __future__ import annotations

from digest.editor.desk import create_editor_app
from digest.editor.preview import preview
from storage.types import utcnow
from tests.fixtures_web import LiveServer, _free_port
from tests.test_editor import sender  # noqa: F401 — the fixture: a store with a comparison and two readers

LAPTOP = {"width": 1440, "height": 900}  # a common laptop screen, CSS pixels
COLUMNS = 78

MEASURE = """pane => {
    const style = getComputedStyle(pane);
    const probe = document.createElement("span");
    probe.textContent = "0".repeat(%d);
    pane.appendChild(probe);
    const columns = probe.getBoundingClientRect().width;
    probe.remove();
    const box = pane.getBoundingClientRect();
    const padding = parseFloat(style.paddingTop) + parseFloat(style.paddingBottom);
    return {columns, inside: pane.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight),
            lineHeight: parseFloat(style.lineHeight), contentHeight: pane.scrollHeight - padding,
            top: box.top, left: box.left};
}""" % COLUMNS


def test_the_text_pane_is_78_columns_beside_the_desktop_frame_and_wraps_no_line(sender, page):  # noqa: F811
    """at 1440 px: the text pane starts level with the desktop frame, right of it, fits 78 columns, and holds
    exactly as many line boxes as the text part has lines"""
    text = preview(services=sender.services, week=None, now=utcnow(), as_email=None).email.text
    page.set_viewport_size(LAPTOP)
    with LiveServer(create_editor_app(sender.services), _free_port()) as server:
        page.goto(server.url + "/")
        pane = page.eval_on_selector("pre.text", MEASURE)
        desktop = page.eval_on_selector("iframe[title=desktop]", "e => e.getBoundingClientRect().toJSON()")
        page_width = page.evaluate("document.scrollingElement.scrollWidth")

    assert pane["top"] == desktop["top"] and pane["left"] >= desktop["right"], (pane, desktop)
    assert pane["inside"] >= pane["columns"], f"{pane['inside']} px inside the pane, {COLUMNS} columns need {pane['columns']}"
    lines = len(text.rstrip("\n").split("\n"))
    assert round(pane["contentHeight"] / pane["lineHeight"]) == lines, "a line of the text part wrapped"
    assert page_width <= LAPTOP["width"], "the page scrolls sideways"
