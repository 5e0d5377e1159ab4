"""The subscriber pages in a real headless Chromium against a real uvicorn (SQLite): click, submit, see it stored."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from playwright.sync_api import expect
from sqlmodel import Session

from storage.models import Subscriber, SubscriberStatus
from tests.factories import add_comparison, add_subscribers, recipient_token

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"  # gitignored
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def stored(live_app, subscriber_id: int) -> Subscriber:
    with Session(live_app.app.state.ctx.engine) as session:
        return session.get(Subscriber, subscriber_id)


def link_for(live_app, kind: str, subscriber_id: int) -> str:
    token = recipient_token(live_app.app.state.ctx.engine, live_app.app.state.ctx.signer, subscriber_id)
    return f"{live_app.url}/{kind}/{token}"


def subscriber_with_categories(live_app) -> int:
    engine = live_app.app.state.ctx.engine
    for category in ("Developer Tools", "Writing", "Data & Analytics", "Image Generation"):
        add_comparison(engine, category=category, published_at=NOW)
    sid, = add_subscribers(engine, 1, categories=["Data & Analytics"])
    return sid


def test_change_categories_by_clicking(live_app, page):
    """Open a preference link, tick Writing, untick Data & Analytics, save: the message shows and it is stored."""
    sid = subscriber_with_categories(live_app)
    page.goto(link_for(live_app, "p", sid))
    expect(page.get_by_label("Data & Analytics")).to_be_checked()

    page.get_by_label("Writing").check()
    page.get_by_label("Data & Analytics").uncheck()
    page.get_by_role("button", name="Save categories").click()

    expect(page.get_by_role("status")).to_have_text("Saved. You will get: Writing.")
    assert "?saved=categories" in page.url
    assert stored(live_app, sid).categories == "writing"
    expect(page.get_by_label("Writing")).to_be_checked()


def test_keyboard_alone_can_save_categories(live_app, page):
    """With the keyboard only: tab to a checkbox, Space ticks it, Tab to Save and Enter submits."""
    sid = subscriber_with_categories(live_app)
    page.goto(link_for(live_app, "p", sid))
    page.get_by_label("Developer Tools").focus()

    page.keyboard.press("Space")
    for _ in range(3):  # Image Generation, Writing, then the Save button: focus follows the visual order
        page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Save categories"
    page.keyboard.press("Enter")

    expect(page.get_by_role("status")).to_contain_text("Saved.")
    assert stored(live_app, sid).categories == "data & analytics;developer tools"


def test_unsubscribe_and_resubscribe_by_clicking(live_app, page):
    """Open an unsubscribe link, click Unsubscribe, see the confirmation; click Resubscribe, active again."""
    sid, = add_subscribers(live_app.app.state.ctx.engine, 1)
    page.goto(link_for(live_app, "u", sid))
    assert stored(live_app, sid).status == SubscriberStatus.active  # opening the page changed nothing

    page.get_by_role("button", name="Unsubscribe").click()

    expect(page.get_by_role("heading", level=1)).to_have_text("You are unsubscribed")
    expect(page.get_by_role("status")).to_contain_text("will get no more emails from us")
    assert stored(live_app, sid).status == SubscriberStatus.unsubscribed

    page.get_by_role("button", name="Resubscribe").click()

    expect(page.get_by_role("status")).to_contain_text("You are subscribed again")
    assert stored(live_app, sid).status == SubscriberStatus.active


def test_preference_page_fits_a_phone_and_screenshots(live_app, page):
    """At 375 px the preference page has no horizontal scroll; screenshots at 375 and 1024 px go to test-artifacts/."""
    engine = live_app.app.state.ctx.engine
    sid = subscriber_with_categories(live_app)
    with Session(engine) as session:  # a long address must wrap, not widen the page
        row = session.get(Subscriber, sid)
        row.email = "a.very.long.address.of.someone.who.reads.every.week@subdomain.example-company.com"
        session.add(row)
        session.commit()
    ARTIFACTS.mkdir(exist_ok=True)

    for width in (375, 1024):
        page.set_viewport_size({"width": width, "height": 800})
        page.goto(link_for(live_app, "p", sid))
        scroll_width = page.evaluate("document.documentElement.scrollWidth")
        assert scroll_width <= width, f"{width} px wide viewport scrolls sideways ({scroll_width} px)"
        page.screenshot(path=str(ARTIFACTS / f"preferences-{width}.png"), full_page=True)
    assert (ARTIFACTS / "preferences-375.png").stat().st_size > 10_000
