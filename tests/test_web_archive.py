"""The archive: past issues listed, and each one as the web version of the email, with nothing per recipient."""

from __future__ import annotations

import re
import subprocess
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from digest.config import Settings
from digest.links import TOKEN_TAG, Links, Signer
from digest.render.email import Renderer
from digest.claim.opening import open_issue
from storage.db import session_scope
from storage.models import Issue
from tests.factories import add_comparison, add_subscribers
from tests.email_samples import make_comparison

PUBLISHED = datetime(2026, 3, 2, 9, tzinfo=timezone.utc)
OPENED = datetime(2026, 3, 5, 9, tzinfo=timezone.utc)
VALIDATOR = Path(__file__).resolve().parent.parent / "tools" / "node" / "node_modules" / ".bin" / "mjml"


def publish_issue(engine, week: str, titles: list[str], *, opened: datetime = OPENED) -> None:
    for title in titles:
        add_comparison(engine, title=title, published_at=PUBLISHED, pcts=(100, 25))
    add_subscribers(engine, 1)
    assert open_issue(engine=engine, week=week, now=opened).created


def test_the_archive_lists_issues_that_went_out_newest_first(web):
    """the index shows each fanned-out issue: week, date, number of comparisons and titles, newest first"""
    engine = web.app.state.ctx.engine
    publish_issue(engine, "2026-W10", ["Alpha vs Beta", "Gamma <vs> Delta"])
    publish_issue(engine, "2026-W11", ["Epsilon vs Zeta"], opened=datetime(2026, 3, 12, 9, tzinfo=timezone.utc))
    with session_scope(engine) as session:
        session.add(Issue(week="2026-W12", created_at=OPENED))  # opened but never fanned out: not public

    page = web.get("/archive")

    assert page.status_code == 200
    weeks = re.findall(r'href="/archive/(\d{4}-W\d\d)"', page.text)
    assert weeks == ["2026-W11", "2026-W10"]
    assert "Week 10 · 5 March 2026" in page.text and "2026-03-05" in page.text
    assert "2 comparisons" in page.text and "1 comparison<" in page.text
    assert "Alpha vs Beta" in page.text and "Gamma &lt;vs&gt; Delta" in page.text


def test_an_issue_page_is_the_email_without_anything_personal(web):
    """the issue page shows its comparisons and has no tag, no pixel, no unsubscribe or preference link"""
    publish_issue(web.app.state.ctx.engine, "2026-W10", ["Alpha vs Beta", "Gamma vs Delta"])

    page = web.get("/archive/2026-W10")

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Alpha vs Beta" in page.text and "Gamma vs Delta" in page.text
    assert "Week 10 · 5 March 2026" in page.text
    assert "[%" not in page.text and "%]" not in page.text
    assert not re.search(r"/(u|p|o|c)/", page.text), "no unsubscribe, preference, pixel or tracked link"
    assert 'href="http://testserver/subscribe"' in page.text
    assert "preferences from the link in any of our emails" in page.text
    links = re.findall(r'href="([^"]+)"', page.text)
    assert "https://verdicts.example.com/compare/" in " ".join(links)


def test_an_issue_page_ranks_and_caps_like_the_email(web):
    """the page shows the issue's comparisons in rank order, capped at max_shown with an "and K more" line"""
    engine = web.app.state.ctx.engine
    shown = web.app.state.ctx.settings.max_shown
    for index in range(shown + 2):
        add_comparison(engine, title=f"Pair {index:02d}", published_at=PUBLISHED, pcts=(100, index * 10 % 100))
    add_subscribers(engine, 1)
    open_issue(engine=engine, week="2026-W10", now=OPENED)

    page = web.get("/archive/2026-W10")

    titles = re.findall(r"Pair \d\d", page.text)
    assert len(dict.fromkeys(titles)) == shown and "And 2 more verdicts this week" in page.text
    index_titles = re.findall(r"Pair \d\d", web.get("/archive").text)
    assert list(dict.fromkeys(titles)) == index_titles[:shown]  # the index lists them in rank order too


def test_the_issue_page_has_its_own_csp_allowing_inline_styles_but_no_framing(web):
    """the issue page may use inline styles and https images, but no script, no framing, no base, no foreign form"""
    publish_issue(web.app.state.ctx.engine, "2026-W10", ["Alpha vs Beta"])

    csp = web.get("/archive/2026-W10").headers["content-security-policy"]

    directives = {part.split()[0]: part.split()[1:] for part in csp.split(";") if part.strip()}
    assert directives["style-src"] == ["'unsafe-inline'"] and directives["img-src"] == ["https:", "data:"]
    assert directives["default-src"] == ["'none'"] and directives["script-src"] == ["'none'"]
    assert directives["frame-ancestors"] == ["'none'"] and directives["base-uri"] == ["'none'"]
    assert directives["form-action"] == ["'self'"]
    assert "unsafe-inline" not in web.get("/archive").headers["content-security-policy"]


@pytest.mark.parametrize("week", ["2026-W09", "2026-W10x", "latest", "2026-w10", "..%2Fetc"])
def test_an_unknown_or_malformed_week_is_not_found(web, week):
    """a week with no issue, or no week at all, gets the plain not-found page"""
    publish_issue(web.app.state.ctx.engine, "2026-W10", ["Alpha vs Beta"])

    page = web.get(f"/archive/{week}")

    assert page.status_code == 404 and "This link does not work" in page.text


def test_an_empty_archive_says_so(web):
    """before the first issue the index answers 200 and says nothing went out yet"""
    page = web.get("/archive")

    assert page.status_code == 200 and "No issue has gone out yet" in page.text


def _renderer() -> Renderer:
    settings = Settings(secret_key="x" * 32, base_url="https://news.example.com")
    return Renderer(settings=settings, links=Links(base_url=settings.base_url, signer=Signer("x" * 32)))


def test_web_mode_changes_only_the_web_version_of_the_email():
    """without web mode the email keeps its tags, pixel and links; with it, none of them and a javascript: URL
    never reaches an href"""
    comparisons = [make_comparison(0), make_comparison(1, url="javascript:alert(1)")]
    args = dict(week="2026-W48", issue_date=date(2026, 11, 26), comparisons=comparisons, more_count=0,
                audience="all categories")

    email = _renderer().render_segment(**args)
    web = _renderer().render_segment(**args, web=True)

    assert TOKEN_TAG in email.html and "/o/[%t%].gif" in email.html and "/u/[%t%]" in email.text
    assert "[%" not in web.html + web.mjml and web.text == ""
    assert "javascript:" not in web.html
    assert 'href="https://verdicts.example.com/compare/tool-a-0-vs-tool-b-0"' in web.html


def test_the_web_version_is_a_web_page_not_an_email_in_a_browser():
    """issue 16: the web version has its content in one <main> landmark, greets nobody and has no "View in
    your browser" link to itself; the email keeps both"""
    args = dict(week="2026-W48", issue_date=date(2026, 11, 26), comparisons=[make_comparison(0)], more_count=0,
                audience="all categories")

    email = _renderer().render_segment(**args)
    web = _renderer().render_segment(**args, web=True)

    assert web.html.count("<main>") == 1 and web.html.count("</main>") == 1
    body = web.html[web.html.index("<body"):]
    assert re.match(r"<body[^>]*><main>", body) and body.endswith("</main></body></html>")
    assert "Tool A0 vs Tool B0" in body[body.index("<main>"):body.index("</main>")]
    assert "Hi " not in web.html and "View in your browser" not in web.html
    assert "/archive/2026-W48" not in web.html
    assert "<main" not in email.html and "View in your browser" in email.html and "Hi [%name_html%]," in email.html


@pytest.mark.mjml_validator
def test_the_web_version_passes_strict_mjml_validation(tmp_path):
    """the web version's MJML (its own footer) is valid for the reference validator"""
    if not VALIDATOR.exists():
        pytest.fail("reference MJML validator missing: run `npm install --prefix tools/node --no-package-lock`")
    web = _renderer().render_segment(week="2026-W48", issue_date=date(2026, 11, 26),
                                     comparisons=[make_comparison(0)], more_count=2, audience="all categories",
                                     web=True)
    path = tmp_path / "web.mjml"
    path.write_text(web.mjml, encoding="utf-8")

    result = subprocess.run([str(VALIDATOR), "--validate", str(path), "--config.validationLevel", "strict"],
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr
