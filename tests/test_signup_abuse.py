"""A stranger at the signup form cannot speak for someone else: no typed name is kept or mailed before the
owner confirms, names with links are refused, plus-address variants share one mailbox's limit, JSON that is
not the documented shape gets a 4xx, and the signup's email leaves from another process, later, whatever
the address. Each rate limit counts only its own key, keeps an HMAC rather than the address or the IP, and lets
no more than its limit through when requests race for the last place. Timing itself is measured by
benchmarks/signup_timing.py (figures in docs/reliability.md)."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from digest.subscribers.confirmation import SignupRequest
from digest.subscribers.signup_mailer import RESTART_AFTER, SignupMailer
from digest.web import create_app
from digest.web.signup_limits import count_signup
from storage.db import session_scope
from storage.models import Event, Subscriber, SubscriberStatus
from tests.factories import add_subscribers
from tests.fixtures_signup import sent, signup_settings, web  # noqa: F401 — fixtures: these take the place of fixtures_web's
from tests.fixtures_web import web_settings
from tests.test_web_signup import (
    CONFIRM_LINK,
    confirm_token,
    post_form,
    post_json,
    subscriber,
)

IMPOSTOR = "Security Team"  # no link in it: the form accepts it, and it must still never reach the row or a mail


def stored(web, email: str) -> Subscriber:
    assert web.app.state.signup_mailer.wait_idle(timeout=60)
    with session_scope(web.app.state.ctx.engine) as session:
        return session.execute(select(Subscriber).where(Subscriber.email_key == email)).scalar_one()


def test_a_strangers_name_reaches_no_row_and_no_email_before_the_owner_confirms(web, sent):
    """a name typed for an active, pending, unsubscribed or bounced address is stored nowhere and mailed nowhere"""
    engine = web.app.state.ctx.engine
    statuses = [SubscriberStatus.active, SubscriberStatus.pending, SubscriberStatus.unsubscribed,
                SubscriberStatus.bounced]
    ids = {status: add_subscribers(engine, 1, prefix=status.value, status=status)[0] for status in statuses}
    with session_scope(engine) as session:
        before = {status: (row.email_key, row.name) for status, row in
                  ((status, session.get(Subscriber, sid)) for status, sid in ids.items())}

    for email, _ in before.values():
        assert post_json(web, email, name=IMPOSTOR).status_code == 202
        assert post_form(web, email, name=IMPOSTOR).status_code == 200
    assert post_json(web, "newcomer@example.com", name=IMPOSTOR).status_code == 202

    for status, (email, name) in before.items():
        assert stored(web, email).name == name, status
    assert stored(web, "newcomer@example.com").name == ""
    mails = sent.all()
    assert len(mails) == 7  # two each for active, pending, unsubscribed; one for the newcomer; none for bounced
    for mail in mails:
        assert mail.name is None and IMPOSTOR not in mail.text + mail.html and "Reader" not in mail.text


def test_only_the_confirming_owner_sets_the_name_and_an_old_strangers_name_is_dropped(web, sent):
    """confirming stores the name in the link; a pending row's unconfirmed name does not survive a nameless link"""
    engine = web.app.state.ctx.engine
    [legacy] = add_subscribers(engine, 1, prefix="legacy", status=SubscriberStatus.pending)  # "Reader N": unconfirmed
    with session_scope(engine) as session:
        legacy_email = session.get(Subscriber, legacy).email

    post_json(web, legacy_email)
    post_json(web, "owner@example.com", name="Grace Hopper")
    links = {mail.email: confirm_token(mail) for mail in sent.all()}
    for token in links.values():
        assert web.post(f"/confirm/{token}").status_code == 200

    assert stored(web, legacy_email).name == "" and stored(web, legacy_email).status == SubscriberStatus.active
    assert stored(web, "owner@example.com").name == "Grace Hopper"


def test_a_link_signed_before_names_were_checked_cannot_store_a_link_like_name(web, sent):
    """a still-valid confirmation link carrying "https://…" as the name: the page omits it, confirming stores none"""
    from digest.subscribers.confirmation import ConfirmTokens

    ctx = web.app.state.ctx
    [pending] = add_subscribers(ctx.engine, 1, prefix="early", status=SubscriberStatus.pending)
    with session_scope(ctx.engine) as session:
        row = session.get(Subscriber, pending)
        email, key, tag = row.email, row.email_key, row.link_tag
    token = ConfirmTokens.for_settings(ctx.settings, clock=ctx.clock).dumps(
        subscriber_id=pending, email_key=key, name="Verify at https://evil.example", categories="", tag=tag)

    page = web.get(f"/confirm/{token}")
    done = web.post(f"/confirm/{token}")

    assert page.status_code == 200 and "evil" not in page.text and "without a name" in page.text
    assert done.status_code == 200 and stored(web, key).name == "" and stored(web, key).email == email


@pytest.mark.parametrize("name", ["Support: verify at https://evil.example", "evil.example", "help@evil.example",
                                  "www.evil"])
def test_a_name_with_a_link_is_refused_on_the_form_next_to_the_field_and_in_json(web, sent, name):
    """a URL, domain or address as the name: 422 with the reason under the name field, or field "name" in JSON"""
    form = post_form(web, "reader@example.com", name=name)
    answer = post_json(web, "reader@example.com", name=name)

    assert form.status_code == 422 and "web or email address" in form.text
    name_input = form.text.index('id="name"')
    alert = form.text.index('role="alert"')
    assert name_input < alert < form.text.index("</form>") and form.text.count('role="alert"') == 1
    assert 'aria-invalid="true"' in form.text[name_input:alert]
    assert 'aria-invalid' not in form.text[form.text.index('id="email"'):name_input]  # the address was fine
    assert answer.status_code == 422 and answer.json()["field"] == "name"
    assert "web or email address" in answer.json()["error"]
    assert subscriber(web, "reader@example.com") is None and sent.all() == []


def test_plus_tags_and_letter_case_count_against_one_mailbox(web, sent):
    """four spellings of one mailbox share its 3 signups an hour (a tag runs from the first +); a dotted local
    part is another mailbox"""
    variants = ["Ada+1@Example.com", "ada+news@example.com", "ADA@EXAMPLE.COM", "ada+4+x@example.com"]

    answers = [post_json(web, address).status_code for address in variants]
    dotted = post_json(web, "a.da@example.com").status_code

    assert answers == [202, 202, 202, 429] and dotted == 202
    inbox = [mail for mail in sent.all() if re.fullmatch(r"ada(\+\w+)?@example\.com", mail.email, re.I)]
    assert len(inbox) == 3
    assert stored(web, "ada+1@example.com").email == "Ada+1@example.com"  # the address is stored as typed


NESTED = b'{"email": "a@example.com", "categories": ' + b"[" * 5000 + b"]" * 5000 + b"}"


@pytest.mark.parametrize("body", [
    b"[" * 5000 + b"]" * 5000,  # 10 KB of nested arrays: was a RecursionError, a 500
    b"{" * 3000 + b"}" * 3000, NESTED,
    b'{"email": ["a@example.com"]}', b'{"email": {"a": 1}}', b'{"email": null}', b'{"email": 1e999}',
    b'{"email": "a@example.com", "name": ["Ada"]}', b'{"email": "a@example.com", "name": null}',
    b'{"email": "a@example.com", "categories": "Writing"}', b'{"email": "a@example.com", "categories": [["x"]]}',
    b'{"email": "a@example.com", "categories": [1]}', b'{"email": "a@example.com", "admin": "yes"}',
    b'{"email": "a@example.com", "email": "b@example.com"}', b'[]', b'"a@example.com"', b"null", b"1" * 5000,
    b'{"email": "a@example.com"', b"\xff\xfe", b"",
], ids=lambda body: body[:24].decode("latin-1"))
def test_json_that_is_not_a_flat_object_of_strings_gets_a_4xx_and_changes_nothing(web, sent, body):
    """nested, mistyped, repeated, unknown or broken JSON: 400 with a JSON error saying the shape, never a 5xx"""
    answer = web.post("/subscribe", content=body, headers={"content-type": "application/json"})

    assert answer.status_code == 400, answer.text[:300]
    assert '{"email": "you@example.com"' in answer.json()["error"]
    assert answer.headers["content-security-policy"] and answer.headers["cache-control"] == "no-store"
    with session_scope(web.app.state.ctx.engine) as session:
        assert session.execute(select(Subscriber)).first() is None
    assert sent.all() == []


# -- the signup mailer -----------------------------------------------------------------------------------------

@pytest.fixture
def slow_mailer(db_url, fake_sendgrid):
    """The app with the production mailer: a child process that sends each letter within SPREAD_SECONDS."""
    settings = signup_settings(db_url, fake_sendgrid)
    app = create_app(settings)
    app.state.signup_mailer = SignupMailer(settings, spread_seconds=3.0)
    with TestClient(app, base_url="http://testserver") as client:
        yield client, app.state.signup_mailer, fake_sendgrid


def test_every_signup_hands_one_letter_to_another_process_which_does_the_rest_later(slow_mailer):
    """active, bounced and new addresses: the requests store nothing and send nothing; a child process does"""
    client, mailer, server = slow_mailer
    engine = client.app.state.ctx.engine
    [active] = add_subscribers(engine, 1, prefix="active")
    [bounced] = add_subscribers(engine, 1, prefix="bounced", status=SubscriberStatus.bounced)
    with session_scope(engine) as session:
        addresses = [session.get(Subscriber, sid).email for sid in (active, bounced)] + ["new@example.com"]

    started = time.monotonic()
    answers = [post_json(client, address) for address in addresses]
    sent_during_the_requests = list(server.sandboxed)
    with session_scope(engine) as session:
        stored_during_the_requests = session.execute(select(Subscriber).where(Subscriber.email_key == "new@example.com")).first()

    assert [a.status_code for a in answers] == [202] * 3 and len({a.content for a in answers}) == 1
    if time.monotonic() - started < 1.0:  # each letter waits a random 0-3 s: a few ms in, nothing has happened
        assert sent_during_the_requests == [] and stored_during_the_requests is None
    assert mailer.pid not in (None, os.getpid())
    assert mailer.wait_idle(timeout=30)
    assert sorted(body["personalizations"][0]["to"][0]["email"] for body in server.sandboxed) == \
           sorted([addresses[0], "new@example.com"])
    with session_scope(engine) as session:
        assert session.execute(select(Subscriber.status).where(Subscriber.email_key == "new@example.com")).scalar() \
               == SubscriberStatus.pending


def test_shutdown_sends_the_waiting_letters_at_once(db_url, fake_sendgrid):
    """letters still waiting for their moment go out when the app shuts down, without the wait"""
    settings = signup_settings(db_url, fake_sendgrid)
    app = create_app(settings)
    app.state.signup_mailer = SignupMailer(settings, spread_seconds=600.0)
    with TestClient(app, base_url="http://testserver") as client:
        for number in range(3):
            assert post_json(client, f"patient{number}@example.com").status_code == 202
        started = time.monotonic()

    assert time.monotonic() - started < 60
    assert sorted(b["personalizations"][0]["to"][0]["email"] for b in fake_sendgrid.sandboxed) == \
           [f"patient{n}@example.com" for n in range(3)]
    assert all(CONFIRM_LINK.search(part["value"]) for b in fake_sendgrid.sandboxed for part in b["content"])


def test_a_mailer_that_died_is_replaced_at_the_next_signup(web, sent):
    """the child killed outright: the next signup starts a new one, which sends its letter"""
    mailer = web.app.state.signup_mailer
    post_json(web, "first@example.com")
    assert len(sent.all()) == 1
    first = mailer.pid
    os.kill(first, signal.SIGKILL)
    status = Path(f"/proc/{first}/status")
    deadline = time.monotonic() + 10
    while status.exists() and "State:\tZ" not in status.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)  # dead, not yet reaped: its parent finds out at the next signup
    time.sleep(RESTART_AFTER)  # a mailer that dies at once is not restarted in a loop

    post_json(web, "second@example.com")

    assert mailer.pid not in (None, first)
    assert [mail.email for mail in sent.all()] == ["first@example.com", "second@example.com"]


def test_the_json_error_names_the_field_and_the_form_keeps_what_was_typed(web, sent):
    """an invalid address: JSON says field "email"; the form shows the error under the address, values kept"""
    answer = post_json(web, "not-an-address", name="Ada")
    form = post_form(web, "not-an-address", name="Ada")

    assert answer.status_code == 422 and answer.json()["field"] == "email"
    assert json.loads(answer.content)["error"].startswith("That email address is not valid")
    assert form.status_code == 422 and 'value="Ada"' in form.text and 'value="not-an-address"' in form.text
    assert form.text.index('id="email"') < form.text.index('role="alert"') < form.text.index('id="name"')


def test_a_transport_given_to_the_app_gets_the_letters_from_a_thread(db_url, web_transport):
    """create_app(transport=…) (tests of other pages): the same letters reach that transport, "none" ones not"""
    settings = web_settings(db_url)
    app = create_app(settings, transport=web_transport)
    app.state.signup_mailer = SignupMailer(settings, transport=web_transport, spread_seconds=0.2)
    with TestClient(app, base_url="http://testserver") as client:
        [bounced] = add_subscribers(client.app.state.ctx.engine, 1, prefix="bounced", status=SubscriberStatus.bounced)
        with session_scope(client.app.state.ctx.engine) as session:
            address = session.get(Subscriber, bounced).email
        post_json(client, "threaded@example.com")
        post_json(client, address)
        assert app.state.signup_mailer.wait_idle(timeout=30) and app.state.signup_mailer.pid is None

    assert web_transport.recipients == ["threaded@example.com"]


# -- the rate limits, each on its own key (issue 22's mutation run found these held by no test) ---------------------

LIMITS_NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def signup(address: str) -> SignupRequest:
    return SignupRequest(email=address, email_key=address.lower(), name="", categories="")


def test_a_client_at_its_limit_leaves_other_clients_their_own(web):
    ctx = web.app.state.ctx
    per_client = ctx.settings.signup_per_client_per_hour
    for n in range(per_client):
        assert count_signup(ctx, signup(f"reader{n}@example.com"), "192.0.2.1", now=LIMITS_NOW)
    assert not count_signup(ctx, signup("one.more@example.com"), "192.0.2.1", now=LIMITS_NOW)
    assert count_signup(ctx, signup("one.more@example.com"), "192.0.2.2", now=LIMITS_NOW)


def test_the_events_name_their_limit_and_keep_an_hmac_not_the_address_or_the_ip(web):
    ctx = web.app.state.ctx
    assert count_signup(ctx, signup("Ada.Lovelace+news@example.com"), "198.51.100.7", now=LIMITS_NOW)
    with session_scope(ctx.engine) as session:
        events = session.execute(select(Event.kind, Event.source, Event.detail)).all()
    assert sorted((kind, source, re.sub(r"[0-9a-f]{64}$", "HMAC", detail)) for kind, source, detail in events) == [
        ("signup", "web", "address:HMAC"), ("signup", "web", "client:HMAC")]
    assert not any("lovelace" in detail.lower() or "198.51" in detail for _, _, detail in events)


def test_signups_racing_for_one_mailbox_get_no_more_than_its_limit(web):
    "twelve requests at once for one mailbox, each from its own client: exactly the limit pass (on PostgreSQL the "
    "advisory locks serialise them; on SQLite the one writer does)"
    ctx = web.app.state.ctx
    start, passed = threading.Barrier(12), []

    def one(n: int) -> None:
        start.wait()
        passed.append(count_signup(ctx, signup(f"race+{n}@example.com"), f"203.0.113.{n}", now=LIMITS_NOW))

    threads = [threading.Thread(target=one, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(passed) == [False] * (12 - ctx.settings.signup_per_address_per_hour) + [
        True] * ctx.settings.signup_per_address_per_hour
