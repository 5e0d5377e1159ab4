"""Unsubscribe and preference centre through HTTP (TestClient), on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from digest.importing.subscribers import SuppressedAddress, add_subscriber, import_subscribers
from digest.subscribers.subscriptions import is_suppressed
from storage.db import session_scope
from storage.models import Delivery, DeliveryStatus, Event, Issue, Segment, Subscriber, SubscriberStatus, Suppression
from tests.factories import add_comparison, add_subscribers, recipient_token

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


# -- helpers ---------------------------------------------------------------------------------------------

def token_for(web, subscriber_id: int, delivery_id: int | None = None) -> str:
    return recipient_token(engine_of(web), web.app.state.ctx.signer, subscriber_id, delivery_id)


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]{64})"', html).group(1)


def engine_of(web):
    return web.app.state.ctx.engine


def subscriber(web, subscriber_id: int) -> Subscriber | None:
    with Session(engine_of(web)) as session:
        return session.get(Subscriber, subscriber_id)


def events(web, subscriber_id: int, kind: str | None = None) -> list[Event]:
    with Session(engine_of(web)) as session:
        query = select(Event).where(Event.subscriber_id == subscriber_id)
        if kind:
            query = query.where(Event.kind == kind)
        return list(session.execute(query).scalars())


def add_delivery(web, subscriber_id: int, week: str) -> int:
    """A sent delivery of issue WEEK to the subscriber, with an open event on it."""
    with session_scope(engine_of(web)) as session:
        issue = session.execute(select(Issue).where(Issue.week == week)).scalar_one_or_none()
        if issue is None:
            issue = Issue(week=week, created_at=NOW)
            session.add(issue)
            session.flush()
        segment = Segment(issue_id=issue.id, key=f"k{subscriber_id}", comparison_ids="")
        session.add(segment)
        session.flush()
        delivery = Delivery(issue_id=issue.id, subscriber_id=subscriber_id, segment_id=segment.id,
                            status=DeliveryStatus.sent, sent_at=NOW, message_id=f"m-{subscriber_id}")
        session.add(delivery)
        session.flush()
        session.add(Event(kind="open", source="pixel", occurred_at=NOW, delivery_id=delivery.id,
                          subscriber_id=subscriber_id, issue_id=issue.id))
        return delivery.id


def form_post(web, path: str, **fields):
    """A browser-style form POST: GET the page first (CSRF cookie), then POST with its CSRF field."""
    page = web.get(path)
    assert page.status_code == 200, page.text
    return web.post(path, data={"csrf": csrf_of(page.text), **fields})


# -- unsubscribe -----------------------------------------------------------------------------------------

def test_one_click_post_unsubscribes_at_once_and_is_idempotent(web):
    """An RFC 8058 one-click POST (no cookie, no CSRF) unsubscribes; a repeat answers 200 and records nothing more."""
    sid, other = add_subscribers(engine_of(web), 2)
    delivery_id = add_delivery(web, sid, "2026-W47")
    token = token_for(web, sid, delivery_id)

    first = web.post(f"/u/{token}", data=ONE_CLICK)
    second = web.post(f"/u/{token}", data=ONE_CLICK)

    assert (first.status_code, second.status_code) == (200, 200)
    assert subscriber(web, sid).status == SubscriberStatus.unsubscribed
    unsubscribes = events(web, sid, "unsubscribe")
    assert len(unsubscribes) == 1
    assert unsubscribes[0].delivery_id == delivery_id and unsubscribes[0].issue_id is not None
    assert subscriber(web, other).status == SubscriberStatus.active


def test_get_unsubscribe_page_changes_nothing_and_offers_one_post_form(web):
    """A link scanner GETting the unsubscribe link twice changes nothing; the page has one POST form."""
    sid, = add_subscribers(engine_of(web), 1)
    token = token_for(web, sid)

    web.get(f"/u/{token}")
    page = web.get(f"/u/{token}")

    assert page.status_code == 200
    assert subscriber(web, sid).status == SubscriberStatus.active
    assert events(web, sid) == []
    assert len(re.findall(r"<form\b", page.text)) == 1
    assert re.search(rf'<form method="post" action="/u/{re.escape(token)}">', page.text)
    assert page.text.count("<button") == 1 and ">Unsubscribe</button>" in page.text
    assert f'href="/p/{token}"' in page.text


def test_form_post_without_valid_csrf_is_refused_and_changes_nothing(web):
    """A browser form POST to /u without the CSRF field, with a wrong one, or without the cookie gets 403."""
    sid, = add_subscribers(engine_of(web), 1)
    token = token_for(web, sid)
    good = csrf_of(web.get(f"/u/{token}").text)

    missing = web.post(f"/u/{token}", data={"action": "unsubscribe"})
    wrong = web.post(f"/u/{token}", data={"action": "unsubscribe", "csrf": "0" * 64})
    web.cookies.clear()
    no_cookie = web.post(f"/u/{token}", data={"action": "unsubscribe", "csrf": good})
    no_cookie_p = web.post(f"/p/{token}", data={"action": "unsubscribe", "csrf": good})

    assert [r.status_code for r in (missing, wrong, no_cookie, no_cookie_p)] == [403, 403, 403, 403]
    assert subscriber(web, sid).status == SubscriberStatus.active
    assert events(web, sid) == []


def test_unsubscribe_button_then_resubscribe_button(web):
    """The page's Unsubscribe button (with CSRF) unsubscribes, redirects, and the next page offers Resubscribe."""
    sid, = add_subscribers(engine_of(web), 1)
    token = token_for(web, sid)

    done = form_post(web, f"/u/{token}", action="unsubscribe")
    assert done.status_code == 303 and done.headers["location"] == f"/u/{token}?done=1"
    assert subscriber(web, sid).status == SubscriberStatus.unsubscribed
    after = web.get(done.headers["location"])
    assert "You are unsubscribed" in after.text and re.search(r'role="status">\s*<p class="notice">Done', after.text)
    assert ">Resubscribe</button>" in after.text

    back = web.post(f"/u/{token}", data={"csrf": csrf_of(after.text), "action": "resubscribe"})

    assert back.status_code == 303
    assert subscriber(web, sid).status == SubscriberStatus.active
    assert [e.kind for e in events(web, sid)] == ["unsubscribe", "resubscribe"]


# -- preference centre -----------------------------------------------------------------------------------

def test_category_choices_are_stored_canonical_and_unknown_names_ignored(web):
    """Ticking Writing and Developer Tools (plus a forged unknown name) stores "developer tools;writing"."""
    engine = engine_of(web)
    for category in ("Developer Tools", "Writing", "Data"):
        add_comparison(engine, category=category, published_at=NOW)
    sid, = add_subscribers(engine, 1, categories=["data"])
    token = token_for(web, sid)
    page = web.get(f"/p/{token}")
    assert re.search(r'value="Data" checked', page.text) and 'value="Writing">' in page.text

    saved = web.post(f"/p/{token}", data={"csrf": csrf_of(page.text), "action": "categories",
                                          "category": ["Writing", "Developer Tools", "Made Up"]})

    assert saved.status_code == 303 and saved.headers["location"] == f"/p/{token}?saved=categories"
    assert subscriber(web, sid).categories == "developer tools;writing"
    shown = web.get(saved.headers["location"])
    assert "Saved. You will get: Developer Tools, Writing." in shown.text

    web.post(f"/p/{token}", data={"csrf": csrf_of(shown.text), "action": "categories"})
    assert subscriber(web, sid).categories == ""  # none ticked: every category


def test_a_stored_category_with_a_semicolon_is_not_offered_and_never_stored_split(web):
    """A comparison filed under "AI; Agents" before the contract forbade ;: the form neither offers nor stores it."""
    engine = engine_of(web)
    for category in ("AI; Agents", "AI, Agents", "Writing"):
        add_comparison(engine, category=category, published_at=NOW)
    sid, = add_subscribers(engine, 1)
    token = token_for(web, sid)
    page = web.get(f"/p/{token}")
    assert page.status_code == 200 and 'value="Writing">' in page.text
    assert "Agents" not in page.text

    saved = web.post(f"/p/{token}", data={"csrf": csrf_of(page.text), "action": "categories",
                                          "category": ["AI; Agents", "AI, Agents", "Writing"]})

    assert saved.status_code == 303
    assert subscriber(web, sid).categories == "writing"
    assert "Saved. You will get: Writing." in web.get(saved.headers["location"]).text


def test_categories_stored_split_by_the_old_form_show_as_the_fan_out_reads_them(web):
    """categories "ai; agents" stored by the old form: the page shows ai and agents ticked, and saving keeps both"""
    engine = engine_of(web)
    add_comparison(engine, category="Writing", published_at=NOW)
    sid, = add_subscribers(engine, 1)
    with session_scope(engine) as session:
        session.get(Subscriber, sid).categories = "ai; agents"
    token = token_for(web, sid)
    page = web.get(f"/p/{token}")
    assert page.status_code == 200
    assert 'value="agents" checked' in page.text and 'value="ai" checked' in page.text

    web.post(f"/p/{token}", data={"csrf": csrf_of(page.text), "action": "categories",
                                  "category": ["agents", "ai", "Writing"]})
    assert subscriber(web, sid).categories == "agents;ai;writing"


def test_the_signup_offers_and_takes_only_categories_the_contract_accepts(web):
    """the signup form lists Writing but not the stored "AI; Agents", and a signup naming "AI; Agents" is refused"""
    engine = engine_of(web)
    for category in ("AI; Agents", "Writing"):
        add_comparison(engine, category=category, published_at=NOW)
    form = web.get("/subscribe")
    assert "Writing" in form.text and "Agents" not in form.text

    refused = web.post("/subscribe", json={"email": "ada@example.com", "categories": ["AI; Agents"]})

    assert refused.status_code == 422 and "ai; agents" in refused.json()["error"]
    with Session(engine) as session:
        assert session.execute(select(func.count()).select_from(Subscriber)).scalar_one() == 0


def test_pause_for_weeks_then_resume(web):
    """Pausing for 4 weeks stores now + 4 weeks and shows the date; "resume now" clears it; 3 weeks is refused."""
    web.app.state.ctx.clock = lambda: NOW
    sid, = add_subscribers(engine_of(web), 1)
    token = token_for(web, sid)

    refused = form_post(web, f"/p/{token}", action="pause", weeks="3")
    assert refused.status_code == 400 and subscriber(web, sid).paused_until is None

    paused = form_post(web, f"/p/{token}", action="pause", weeks="4")
    assert paused.status_code == 303
    assert subscriber(web, sid).paused_until == NOW + timedelta(weeks=4)
    page = web.get(paused.headers["location"])
    assert "Paused until <strong>23 December 2026</strong>" in page.text and ">Resume now</button>" in page.text

    web.post(f"/p/{token}", data={"csrf": csrf_of(page.text), "action": "resume"})
    assert subscriber(web, sid).paused_until is None


def test_unsubscribe_from_everything_and_resubscribe_in_preferences(web):
    """The preference centre's unsubscribe and resubscribe buttons change the status and record events."""
    sid, = add_subscribers(engine_of(web), 1)
    token = token_for(web, sid)

    form_post(web, f"/p/{token}", action="unsubscribe")
    assert subscriber(web, sid).status == SubscriberStatus.unsubscribed
    page = web.get(f"/p/{token}?saved=unsubscribe")
    assert "You are unsubscribed from everything" in page.text

    web.post(f"/p/{token}", data={"csrf": csrf_of(page.text), "action": "resubscribe"})
    assert subscriber(web, sid).status == SubscriberStatus.active
    assert [e.kind for e in events(web, sid)] == ["unsubscribe", "resubscribe"]


def test_export_is_a_json_attachment_with_their_data_only(web):
    """Download my data: a JSON attachment with their fields, deliveries, events and votes, nothing of anyone else."""
    engine = engine_of(web)
    mine, theirs = add_subscribers(engine, 2, categories=["Writing"])
    add_delivery(web, mine, "2026-W47")
    add_delivery(web, theirs, "2026-W47")
    other_email = subscriber(web, theirs).email

    response = form_post(web, f"/p/{token_for(web, mine)}", action="export")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["cache-control"] == "no-store"
    data = json.loads(response.text)
    assert data["subscriber"]["email"] == subscriber(web, mine).email
    assert data["subscriber"]["categories"] == ["writing"]
    assert [d["issue"] for d in data["deliveries"]] == ["2026-W47"]
    assert [e["kind"] for e in data["events"]] == ["open"]
    assert data["votes"] == []  # never voted; a voter's download: tests/test_votes_reader_data.py
    assert other_email not in response.text and "m-" not in response.text


def test_delete_removes_their_rows_and_keeps_only_a_hash(web, tmp_path):
    """Delete my data (confirmed) removes subscriber, deliveries and events, keeps a SHA-256, refuses re-adding."""
    engine = engine_of(web)
    sid, other = add_subscribers(engine, 2)
    add_delivery(web, sid, "2026-W47")
    add_delivery(web, other, "2026-W47")
    email = subscriber(web, sid).email
    token = token_for(web, sid)

    unconfirmed = form_post(web, f"/p/{token}", action="delete")
    assert unconfirmed.status_code == 400 and subscriber(web, sid) is not None

    deleted = form_post(web, f"/p/{token}", action="delete", confirm="yes")

    assert deleted.status_code == 303 and deleted.headers["location"] == "/p/-/deleted"
    assert web.get("/p/-/deleted").status_code == 200
    with Session(engine) as session:
        assert session.get(Subscriber, sid) is None
        assert session.execute(select(func.count()).select_from(Delivery)
                               .where(Delivery.subscriber_id == sid)).scalar_one() == 0
        assert session.execute(select(func.count()).select_from(Event)
                               .where(Event.subscriber_id == sid)).scalar_one() == 0
        rows = session.execute(select(Suppression)).scalars().all()
        assert [(r.email_hash, r.reason) for r in rows] == [(hashlib.sha256(email.encode()).hexdigest(), "deleted")]
        assert email not in repr([r.model_dump() for r in rows])
        assert is_suppressed(session, email.upper())
    assert len(events(web, other)) == 1  # someone else's data is untouched
    assert web.get(f"/p/{token}").status_code == 404

    with pytest.raises(SuppressedAddress, match="asked to be forgotten"):
        add_subscriber(engine=engine, email=email.upper(), now=NOW)
    csv = tmp_path / "list.csv"
    csv.write_text(f"email,name\nnew@example.com,New\n{email.upper()},Back Again\n")
    result = import_subscribers(engine=engine, path=csv, now=NOW)
    assert (result.created, result.suppressed) == (1, 1)
    assert [(e.line, e.reason.split(":")[0]) for e in result.errors] == [(3, "suppressed")]
    with Session(engine) as session:
        assert session.execute(select(Subscriber).where(Subscriber.email_key == email.lower())).first() is None


def test_bounced_subscriber_cannot_resubscribe(web):
    """A bounced address is told politely it cannot come back here; no form or POST makes it active."""
    sid, = add_subscribers(engine_of(web), 1, status=SubscriberStatus.bounced)
    token = token_for(web, sid)
    page = web.get(f"/p/{token}")
    assert "cannot be resubscribed from here" in page.text and ">Resubscribe</button>" not in page.text

    refused = web.post(f"/p/{token}", data={"csrf": csrf_of(page.text), "action": "resubscribe"})
    web.post(f"/u/{token}", data={"csrf": csrf_of(page.text), "action": "resubscribe"})
    web.post(f"/u/{token}", data=ONE_CLICK)

    assert refused.status_code == 409 and "Sorry, we cannot resubscribe this address" in refused.text
    assert subscriber(web, sid).status == SubscriberStatus.bounced
    assert events(web, sid) == []
    email_key = subscriber(web, sid).email_key
    with Session(engine_of(web)) as session:
        assert is_suppressed(session, email_key)


@pytest.mark.parametrize("path", ["/u/{token}", "/p/{token}", "/u/not-a-token", "/p/-/deleted"])
def test_token_pages_send_security_headers(web, path):
    """Unsubscribe, preference and not-found pages forbid framing, sniffing, referrers and caching."""
    sid, = add_subscribers(engine_of(web), 1)
    response = web.get(path.format(token=token_for(web, sid)))

    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["cache-control"] == "no-store"
    if response.status_code == 200 and "csrf" in response.text:
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
