"""Signup with double opt-in, through the HTTP interface: form and JSON, no enumeration, rate limits, confirm links.

The emails are sent as in production: by the signup mailer's own process, through the `sendgrid` client, to
tests/sendgrid_server.py (tests/fixtures_signup.py). Abuse of the signup (names, mailboxes, JSON shapes,
timing) is in tests/test_signup_abuse.py."""

from __future__ import annotations

import base64
import re
import subprocess
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from digest.subscribers.confirmation import ConfirmTokens, Outgoing, render_letter
from digest.render.environment import email_environment
from digest.web import create_app
from storage.db import session_scope
from storage.models import Event, Subscriber, SubscriberStatus
from tests.factories import add_comparison, add_subscribers
from tests.fixtures_signup import sent, web  # noqa: F401 — fixtures: these take the place of fixtures_web's
from tests.fixtures_web import web_settings

CONFIRM_LINK = re.compile(r"http://testserver/confirm/([A-Za-z0-9_\-.]+)")
PREFERENCES_LINK = re.compile(r"http://testserver/p/([A-Za-z0-9_\-.]+)")
VALIDATOR = "tools/node/node_modules/.bin/mjml"


def csrf_token(web) -> str:
    page = web.get("/subscribe")
    assert page.status_code == 200
    return re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)


def post_form(web, email: str, **fields):
    data = {"email": email, "csrf": csrf_token(web), **fields}
    return web.post("/subscribe", data=data)


def post_json(web, email: str, **fields):
    return web.post("/subscribe", json={"email": email, **fields})


def subscriber(web, email: str) -> Subscriber | None:
    """The row, once the signup mailer has answered every signup so far (it stores new addresses)."""
    assert web.app.state.signup_mailer.wait_idle(timeout=60)
    with session_scope(web.app.state.ctx.engine) as session:
        return session.execute(select(Subscriber).where(Subscriber.email_key == email.lower())).scalars().first()


def confirm_token(mail) -> str:
    return CONFIRM_LINK.search(mail.text).group(1)


def test_a_new_address_becomes_pending_and_gets_one_confirmation_whose_post_confirms(web, sent):
    """a new address is pending, nameless, with one nameless confirmation; GET shows the choices, POST stores them"""
    add_comparison(web.app.state.ctx.engine, category="Writing", published_at=datetime(2026, 1, 1, tzinfo=timezone.utc))

    answer = post_form(web, "New.Reader@Example.com", name="Ada", categories="Writing")

    assert answer.status_code == 200 and "Check your inbox" in answer.text
    person = subscriber(web, "new.reader@example.com")
    assert person.status == SubscriberStatus.pending and person.confirmed_at is None
    assert person.categories == "writing" and person.name == ""  # the name waits in the link for the owner
    [mail] = sent.all()
    assert mail.email == "New.Reader@example.com" and mail.name is None and "Ada" not in mail.text + mail.html
    assert mail.subject == "Confirm your subscription to Weekly AI Tool Verdicts"
    token = confirm_token(mail)
    assert f"/confirm/{token}" in mail.html and "[%" not in mail.html + mail.text
    assert b"new.reader" not in base64.urlsafe_b64decode(token.split(".")[0] + "==")  # the address is hashed

    page = web.get(f"/confirm/{token}")
    assert page.status_code == 200 and "Confirm my subscription" in page.text
    assert f'<form method="post" action="/confirm/{token}">' in page.text  # the button posts to this very link
    assert "greet you as “Ada”" in page.text and "categories writing" in page.text  # what the button stores
    assert page.headers["referrer-policy"] == "no-referrer" and page.headers["cache-control"] == "no-store"
    assert subscriber(web, "new.reader@example.com").status == SubscriberStatus.pending

    done = web.post(f"/confirm/{token}")
    assert done.status_code == 200 and "confirmed" in done.text
    person = subscriber(web, "new.reader@example.com")
    assert person.status == SubscriberStatus.active and person.confirmed_at is not None and person.name == "Ada"
    preferences = re.search(r'href="/p/([^"]+)"', done.text).group(1)
    assert web.app.state.ctx.signer.read_recipient_token(preferences).subscriber_id == person.id

    again = web.post(f"/confirm/{token}")
    assert again.status_code == 200 and subscriber(web, "new.reader@example.com").confirmed_at == person.confirmed_at


def test_every_known_status_gets_the_same_answer_and_only_the_right_email(web, sent):
    """new, pending, active, unsubscribed and bounced addresses get byte-identical answers; the emails differ"""
    engine = web.app.state.ctx.engine
    add_subscribers(engine, 1, prefix="pending", status=SubscriberStatus.pending)
    add_subscribers(engine, 1, prefix="active")
    add_subscribers(engine, 1, prefix="left", status=SubscriberStatus.unsubscribed)
    add_subscribers(engine, 1, prefix="bounced", status=SubscriberStatus.bounced)
    with session_scope(engine) as session:
        known = {s.status: s.email for s in session.execute(select(Subscriber)).scalars()}
    addresses = ["brand.new@example.com", known["pending"], known["active"], known["unsubscribed"], known["bounced"]]

    for post in (post_json, post_form):
        answers = [post(web, address) for address in addresses]
        first = answers[0]
        assert first.status_code in (200, 202)
        for answer in answers[1:]:
            assert (answer.status_code, answer.content) == (first.status_code, first.content)
            assert {k: v for k, v in answer.headers.items() if k != "set-cookie"} == \
                   {k: v for k, v in first.headers.items() if k != "set-cookie"}

    for address in ("brand.new@example.com", known["pending"], known["unsubscribed"]):
        mails = sent.to(address)
        assert len(mails) == 2 and all(CONFIRM_LINK.search(m.text) for m in mails)
    already = sent.to(known["active"])
    assert len(already) == 2 and "already subscribed" in already[0].subject
    assert PREFERENCES_LINK.search(already[0].text) and not CONFIRM_LINK.search(already[0].text)
    assert sent.to(known["bounced"]) == []


def test_json_signup_works_and_confirming_applies_the_chosen_categories(web, sent):
    """a JSON signup is answered 202; confirming stores its categories and re-activates an unsubscribed reader"""
    engine = web.app.state.ctx.engine
    for category in ("Writing", "Developer Tools"):
        add_comparison(engine, category=category, published_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
    [left] = add_subscribers(engine, 1, prefix="left", status=SubscriberStatus.unsubscribed)
    with session_scope(engine) as session:
        address = session.get(Subscriber, left).email

    answer = post_json(web, address, name="Grace", categories=["developer  tools", "Writing"])

    assert answer.status_code == 202 and answer.json()["status"] == "ok"
    assert subscriber(web, address).status == SubscriberStatus.unsubscribed  # nothing changes before confirming
    web.post(f"/confirm/{confirm_token(sent.all()[-1])}")
    person = subscriber(web, address)
    assert person.status == SubscriberStatus.active and person.unsubscribed_at is None
    assert person.categories == "developer tools;writing" and person.name == "Grace"


def test_unknown_categories_and_malformed_json_are_refused_with_a_message(web, sent):
    """categories not in the store and a body that is not the documented JSON get 4xx and a clear message"""
    unknown = post_json(web, "someone@example.com", categories=["Astrology"])
    malformed = web.post("/subscribe", content=b"{not json", headers={"content-type": "application/json"})

    assert unknown.status_code == 422 and "astrology" in unknown.json()["error"]
    assert malformed.status_code == 400 and "email" in malformed.json()["error"]
    assert sent.all() == [] and subscriber(web, "someone@example.com") is None


def test_a_form_post_without_csrf_is_refused(web, sent):
    """the form without its CSRF field, or with a forged one, gets 403 and changes nothing"""
    csrf_token(web)  # the browser has the cookie, the attacker cannot know the field

    missing = web.post("/subscribe", data={"email": "victim@example.com"})
    forged = web.post("/subscribe", data={"email": "victim@example.com", "csrf": "0" * 64})

    assert missing.status_code == 403 and forged.status_code == 403
    assert subscriber(web, "victim@example.com") is None and sent.all() == []


@pytest.mark.parametrize("address", ["not-an-address", "two@@example.com", "someone@localhost", ""])
def test_an_invalid_address_is_refused_with_a_message(web, sent, address):
    """an invalid address gets 422 and says what is wrong, on the form and in JSON"""
    form = post_form(web, address)
    json = post_json(web, address)

    assert form.status_code == 422 and 'role="alert"' in form.text and 'name="csrf"' in form.text
    assert json.status_code == 422
    assert "not valid" in json.json()["error"] or "enter your email" in json.json()["error"]
    assert sent.all() == []


def test_the_fourth_signup_of_an_address_within_an_hour_is_refused_whoever_it_is(web, sent):
    """the 4th signup of one address in an hour gets 429 and no email; the same 429 for a known and an unknown one"""
    [active] = add_subscribers(web.app.state.ctx.engine, 1, prefix="known")
    with session_scope(web.app.state.ctx.engine) as session:
        known = session.get(Subscriber, active).email

    answers = {address: [post_json(web, address) for _ in range(4)] for address in ("unknown@example.com", known)}

    for address, replies in answers.items():
        assert [r.status_code for r in replies] == [202, 202, 202, 429]
        assert len(sent.to(address)) == 3
    assert answers[known][3].content == answers["unknown@example.com"][3].content
    with session_scope(web.app.state.ctx.engine) as session:
        details = session.execute(select(Event.detail).where(Event.kind == "signup")).scalars().all()
    assert details and not any("@" in d or "testclient" in d for d in details)  # hashed, never the raw values


def test_the_twenty_first_signup_from_one_client_within_an_hour_is_refused(web, sent):
    """20 signups from one client IP pass, the 21st gets 429 (HTML for the form) and sends nothing"""
    for number in range(20):
        assert post_json(web, f"reader{number}@example.com").status_code == 202

    refused = post_form(web, "reader20@example.com")

    assert refused.status_code == 429 and "try again in an hour" in refused.text
    assert len(sent.all()) == 20 and subscriber(web, "reader20@example.com") is None


def test_signups_older_than_an_hour_no_longer_count(web, sent):
    """the limit is per hour: an hour later the same address may sign up again"""
    for _ in range(3):
        post_json(web, "patient@example.com")
    ctx = web.app.state.ctx
    later = create_app(ctx.settings, engine=ctx.engine,
                       clock=lambda: datetime.now(timezone.utc) + timedelta(minutes=61))
    with TestClient(later, base_url="http://testserver") as client:
        assert post_json(client, "patient@example.com").status_code == 202


def test_a_confirm_link_older_than_seven_days_fails_with_the_generic_page(web, sent, db_url):
    """after seven days the link shows the same not-found page as a forged one, with a way to sign up again"""
    post_json(web, "late@example.com")
    token = confirm_token(sent.all()[0])
    ctx = web.app.state.ctx
    six_days = create_app(ctx.settings, engine=ctx.engine,
                          clock=lambda: datetime.now(timezone.utc) + timedelta(days=6))
    eight_days = create_app(ctx.settings, engine=ctx.engine,
                            clock=lambda: datetime.now(timezone.utc) + timedelta(days=8))

    with TestClient(eight_days, base_url="http://testserver") as late:
        expired_get, expired_post = late.get(f"/confirm/{token}"), late.post(f"/confirm/{token}")
    forged = web.post("/confirm/" + "x" * len(token))

    assert expired_get.status_code == expired_post.status_code == 404
    assert expired_post.content == forged.content and "/subscribe" in forged.text
    assert subscriber(web, "late@example.com").status == SubscriberStatus.pending
    with TestClient(six_days, base_url="http://testserver") as early:
        assert early.post(f"/confirm/{token}").status_code == 200
    assert subscriber(web, "late@example.com").status == SubscriberStatus.active


def test_a_tampered_or_foreign_token_fails_with_the_generic_page(web, sent):
    """an altered confirm token, a recipient token and a token under another key all get the same 404"""
    post_json(web, "careful@example.com")
    token = confirm_token(sent.all()[0])
    ctx = web.app.state.ctx
    payload, _, rest = token.partition(".")
    altered = payload[:-2] + ("AA" if payload[-2:] != "AA" else "BB") + "." + rest
    other_key = ConfirmTokens("another-secret-key-0123456789", clock=ctx.clock, max_age=timedelta(days=7))
    person = subscriber(web, "careful@example.com")
    foreign = other_key.dumps(subscriber_id=person.id, email_key=person.email_key, name="", categories="",
                              tag=person.link_tag)
    recipient = ctx.signer.recipient_token(subscriber_id=person.id, delivery_id=None, tag=person.link_tag)

    answers = [web.post(f"/confirm/{t}") for t in (altered, foreign, recipient, "nonsense")]

    assert {(a.status_code, a.content) for a in answers} == {(404, answers[0].content)}
    assert subscriber(web, "careful@example.com").status == SubscriberStatus.pending


def test_an_old_secret_key_still_confirms_after_a_rotation(web, sent, db_url):
    """a link signed before the key was rotated still works when the old key is listed"""
    post_json(web, "rotated@example.com")
    token = confirm_token(sent.all()[0])
    ctx = web.app.state.ctx
    rotated = web_settings(db_url, secret_key="a-brand-new-secret-key-9876543210",
                           old_secret_keys=[ctx.settings.secret_key])
    with TestClient(create_app(rotated, engine=ctx.engine),
                    base_url="http://testserver") as client:
        assert client.post(f"/confirm/{token}").status_code == 200
    assert subscriber(web, "rotated@example.com").status == SubscriberStatus.active


def test_a_bounced_address_cannot_be_confirmed_even_with_a_valid_link(web, sent):
    """a link sent while pending stops working once the address bounced: suppression wins"""
    post_json(web, "soon.bounced@example.com")
    token = confirm_token(sent.all()[0])
    with session_scope(web.app.state.ctx.engine) as session:
        person = session.execute(select(Subscriber).where(Subscriber.email_key == "soon.bounced@example.com")).scalar_one()
        person.status = SubscriberStatus.bounced

    assert web.get(f"/confirm/{token}").status_code == 404
    assert web.post(f"/confirm/{token}").status_code == 404
    assert subscriber(web, "soon.bounced@example.com").status == SubscriberStatus.bounced


def test_the_signup_form_is_accessible_and_lists_the_stores_categories(web):
    """the form has labelled fields, one checkbox per distinct category, a CSRF field and a cookie"""
    engine = web.app.state.ctx.engine
    for category in ("Writing", "writing", "Developer Tools"):
        add_comparison(engine, category=category, published_at=datetime(2026, 1, 1, tzinfo=timezone.utc))

    page = web.get("/subscribe")

    assert page.status_code == 200 and "digest_csrf" in page.headers["set-cookie"]
    assert '<label for="email">' in page.text and 'id="email"' in page.text and 'type="email"' in page.text
    assert re.findall(r'name="categories" value="([^"]+)"', page.text) == ["Developer Tools", "Writing"]
    assert "style=" not in page.text  # the CSP allows no inline style, and no inline script:
    assert re.findall(r"<script[^>]*>", page.text) == ['<script src="/static/reader-zone.js" defer>']
    assert "script-src 'self'" in page.headers["content-security-policy"]


@pytest.mark.mjml_validator
@pytest.mark.parametrize("already", [False, True])
def test_the_signup_emails_pass_strict_mjml_validation(already, tmp_path):
    """both variants of the signup email are valid MJML for the reference validator, and their text is complete"""
    from pathlib import Path

    validator = Path(__file__).resolve().parent.parent / VALIDATOR
    if not validator.exists():
        pytest.fail("reference MJML validator missing: run `npm install --prefix tools/node --no-package-lock`")
    outgoing = Outgoing(kind="already" if already else "confirm", email="a@example.com",
                        url="https://news.example.com/x?a=1&b=2")
    email = render_letter(env=email_environment(), settings=web_settings("sqlite://"), outgoing=outgoing)
    path = tmp_path / "confirm.mjml"
    path.write_text(email.mjml, encoding="utf-8")

    result = subprocess.run([str(validator), "--validate", str(path), "--config.validationLevel", "strict"],
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Hello," in email.text and "[%" not in email.html + email.text
    assert "https://news.example.com/x?a=1&b=2" in email.text and 'href="https://news.example.com/x?a=1&amp;b=2"' in email.html


def test_signup_events_are_counted_in_the_store(web, sent):
    """each accepted signup leaves two hashed events (address, client) in the database; a refused one none"""
    for _ in range(4):
        post_json(web, "counted@example.com")
    with session_scope(web.app.state.ctx.engine) as session:
        count = session.execute(select(func.count()).where(Event.kind == "signup")).scalar_one()
    assert count == 6


def test_an_address_that_asked_to_be_forgotten_gets_the_same_answer_and_nothing_else(web, sent):
    """a deleted (suppressed) address is answered like any other, gets no email and is not stored again"""
    from digest.subscribers import subscriptions

    engine = web.app.state.ctx.engine
    [gone] = add_subscribers(engine, 1, prefix="forgotten")
    with session_scope(engine) as session:
        person = session.get(Subscriber, gone)
        address = person.email
        subscriptions.forget(session=session, subscriber=person, now=datetime.now(timezone.utc))

    forgotten, fresh = post_json(web, address), post_json(web, "fresh@example.com")

    assert (forgotten.status_code, forgotten.content) == (fresh.status_code, fresh.content)
    assert sent.to(address) == [] and subscriber(web, address) is None
