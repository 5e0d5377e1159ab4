"""The vote page in a real headless Chromium against a real uvicorn (SQLite): open a link, click, see the tally move."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from playwright.sync_api import expect
from sqlalchemy import select
from sqlmodel import Session

from digest.claim.opening import open_issue
from digest.votes.casting import ballot, cast_vote
from storage.db import session_scope
from storage.models import Delivery, Subscriber, Vote
from tests.factories import add_comparison, add_subscribers, recipient_token
from tests.test_web_browser import ARTIFACTS

NOW = datetime(2026, 11, 26, 9, tzinfo=timezone.utc)
SLUG = "cellmind-vs-quill"


def votable_store(live_app) -> int:
    """A comparison the W48 issue carried; two other readers have voted on its first tool (1 ship, 1 skip)."""
    ctx = live_app.app.state.ctx
    add_comparison(ctx.engine, slug=SLUG, title="Cellmind vs Quill", published_at=NOW - timedelta(days=1))
    reader, shipper, skipper = add_subscribers(ctx.engine, 3)
    open_issue(engine=ctx.engine, week="2026-W48", now=NOW)
    for other, choice in ((shipper, "ship"), (skipper, "skip")):
        with session_scope(ctx.engine) as session:
            cast_vote(session=session, secret_key=ctx.settings.secret_key, subscriber=session.get(Subscriber, other),
                      issue_id=None, ballot=ballot(session=session, slug=SLUG, tool="1", choice=choice), now=NOW)
    return reader


def vote_link(live_app, reader: int, choice: str) -> str:
    ctx = live_app.app.state.ctx
    with Session(ctx.engine) as session:
        delivery = session.execute(select(Delivery.id).where(Delivery.subscriber_id == reader)).scalar_one()
    return f"{live_app.url}/v/{recipient_token(ctx.engine, ctx.signer, reader, delivery)}/{SLUG}/1/{choice}"


def standing(live_app, reader: int) -> list[str]:
    with Session(live_app.app.state.ctx.engine) as session:
        return list(session.execute(select(Vote.choice).where(Vote.subscriber_id == reader)).scalars())


def test_cast_ship_from_the_email_then_change_to_skip(live_app, page):
    """Open a Ship link (Ship ticked, nothing cast), click Cast my vote: Ship counted; the Skip link moves it to Skip"""
    reader = votable_store(live_app)
    page.goto(vote_link(live_app, reader, "ship"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("Ship or skip")
    expect(page.get_by_label("Ship")).to_be_checked()
    expect(page.get_by_role("status")).to_contain_text("Readers of this newsletter: 1 ship / 1 skip")
    assert standing(live_app, reader) == []  # opening the page cast nothing

    page.get_by_role("button", name="Cast my vote").click()

    expect(page.get_by_role("status")).to_contain_text("Your vote: Ship")
    expect(page.get_by_role("status")).to_contain_text("Readers of this newsletter: 2 ship / 1 skip")
    assert page.url.endswith("/1/ship?done=1") and standing(live_app, reader) == ["ship"]

    page.goto(vote_link(live_app, reader, "skip"))
    expect(page.get_by_label("Skip")).to_be_checked()
    expect(page.get_by_role("status")).to_contain_text("Your vote: Ship")
    page.get_by_role("button", name="Cast my vote").click()

    expect(page.get_by_role("status")).to_contain_text("Your vote: Skip")
    expect(page.get_by_role("status")).to_contain_text("Readers of this newsletter: 1 ship / 2 skip")
    assert standing(live_app, reader) == ["skip"]


def test_vote_page_fits_a_phone_and_the_keyboard_can_vote(live_app, page):
    """At 375 px nothing scrolls sideways; on Ship's radio the arrow key moves to Skip and Enter casts Skip"""
    reader = votable_store(live_app)
    ARTIFACTS.mkdir(exist_ok=True)
    page.set_viewport_size({"width": 375, "height": 800})
    page.goto(vote_link(live_app, reader, "ship"))
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.screenshot(path=str(ARTIFACTS / "vote-375.png"), full_page=True)

    page.get_by_label("Ship").focus()
    page.keyboard.press("ArrowRight")  # a radio group moves its choice with the arrows
    expect(page.get_by_label("Skip")).to_be_checked()
    page.keyboard.press("Enter")  # Enter in a form submits it

    expect(page.get_by_role("status")).to_contain_text("Your vote: Skip")
    assert standing(live_app, reader) == ["skip"]
