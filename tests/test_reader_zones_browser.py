"""The signup's time zone in a real headless Chromium against a real uvicorn (SQLite): the page's script reads the
browser's zone under the site's Content-Security-Policy, the confirmation link carries it, confirming stores it.
The signup email goes out as in production, from the signup mailer's process through the `sendgrid` client to
tests/sendgrid_server.py."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect
from sqlalchemy import select
from sqlmodel import Session

from digest.subscribers.signup_mailer import SignupMailer
from digest.web import create_app
from storage.db import make_engine
from storage.models import Subscriber, SubscriberStatus
from tests.fixtures_signup import signup_settings
from tests.fixtures_web import LiveServer, _free_port

CONFIRM_PATH = re.compile(r"/confirm/[A-Za-z0-9_\-.]+")


@pytest.fixture
def live_signup(sqlite_url, fake_sendgrid) -> Iterator[LiveServer]:
    """The app on a real uvicorn, its signup mailer a child process with no random wait, mailing fake_sendgrid."""
    port = _free_port()
    engine = make_engine(sqlite_url)
    settings = signup_settings(sqlite_url, fake_sendgrid, base_url=f"http://127.0.0.1:{port}")
    app = create_app(settings, engine=engine)
    app.state.signup_mailer = SignupMailer(settings, spread_seconds=0)
    with LiveServer(app, port) as server:
        yield server
    app.state.signup_mailer.close()
    engine.dispose()


def confirm_path(live_signup, fake_sendgrid, email: str) -> str:
    """The path of the confirmation link in the one email sent to ``email``."""
    assert live_signup.app.state.signup_mailer.wait_idle(timeout=60), "the signup mailer did not finish"
    [body] = [body for body in list(fake_sendgrid.sandboxed)
              if body["personalizations"][0]["to"][0]["email"].lower() == email]
    text = next(part["value"] for part in body["content"] if part["type"] == "text/plain")
    return CONFIRM_PATH.search(text).group(0)


def stored(live_signup, email_key: str) -> Subscriber:
    with Session(live_signup.app.state.ctx.engine) as session:
        return session.execute(select(Subscriber).where(Subscriber.email_key == email_key)).scalars().one()


def sign_up_and_confirm(live_signup, fake_sendgrid, context, email: str) -> list[str]:
    """Fill in the form and subscribe, then open the emailed link and confirm; the CSP complaints seen."""
    complaints: list[str] = []
    page = context.new_page()
    page.on("console", lambda message: complaints.append(message.text)
            if "Content Security Policy" in message.text else None)
    page.goto(f"{live_signup.url}/subscribe")
    page.get_by_label("Email address", exact=True).fill(email)
    page.get_by_role("button", name="Subscribe").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Check your inbox")

    page.goto(live_signup.url + confirm_path(live_signup, fake_sendgrid, email))
    page.get_by_role("button", name="Confirm my subscription").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Welcome aboard")
    return complaints


def test_a_signup_in_auckland_stores_pacific_auckland_after_confirmation(live_signup, fake_sendgrid, chromium):
    """a browser in Pacific/Auckland fills the hidden field; once confirmed, the reader's zone is Pacific/Auckland"""
    context = chromium.new_context(timezone_id="Pacific/Auckland")
    try:
        page = context.new_page()
        page.goto(f"{live_signup.url}/subscribe")
        expect(page.locator('input[name="timezone"]')).to_have_value("Pacific/Auckland")
        page.close()

        complaints = sign_up_and_confirm(live_signup, fake_sendgrid, context, "kiri@example.com")
    finally:
        context.close()

    assert complaints == []  # the script ran under the page's policy, nothing refused
    person = stored(live_signup, "kiri@example.com")
    assert (person.status, person.timezone) == (SubscriberStatus.active, "Pacific/Auckland")


def test_without_javascript_the_signup_stores_no_zone(live_signup, fake_sendgrid, chromium):
    """JavaScript off: the field stays empty, the signup works, and the reader gets the newsletter's time"""
    context = chromium.new_context(timezone_id="Pacific/Auckland", java_script_enabled=False)
    try:
        sign_up_and_confirm(live_signup, fake_sendgrid, context, "nojs@example.com")
    finally:
        context.close()

    person = stored(live_signup, "nojs@example.com")
    assert (person.status, person.timezone) == (SubscriberStatus.active, None)
