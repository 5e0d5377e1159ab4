"""Open pixel and click redirects, through HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from digest.web import create_app
from storage.db import make_engine, session_scope
from storage.models import Delivery, DeliveryStatus, Event, Issue, Segment, Subscriber
from tests.factories import RecordingTransport, recipient_token
from tests.fixtures_web import web_settings

GIF_HEADER = b"GIF89a\x01\x00\x01\x00"
HUMAN_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Thunderbird/128.3.0"
GMAIL_PROXY_UA = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
_weeks = itertools.count(1)


@dataclass(frozen=True)
class Sent:
    """A delivery that went out, and the address it went to."""

    id: int
    subscriber_id: int
    issue_id: int
    email: str


def sent_delivery(engine, *, sent_at: datetime, email: str | None = None, week: str | None = None) -> Sent:
    """An issue with one delivery to a new active subscriber, sent at ``sent_at``."""
    number = next(_weeks)
    email = email or f"reader{number}@example.com"
    with session_scope(engine) as session:
        issue = session.scalar(select(Issue).where(Issue.week == week)) if week else None
        if issue is None:
            issue = Issue(week=week or f"{2000 + number // 50}-W{number % 50 + 1:02d}", created_at=sent_at)
            session.add(issue)
            session.flush()
        segment = Segment(issue_id=issue.id, key=f"k{number}", comparison_ids="")
        subscriber = Subscriber(email=email, email_key=email.lower())
        session.add_all([segment, subscriber])
        session.flush()
        delivery = Delivery(issue_id=issue.id, subscriber_id=subscriber.id, segment_id=segment.id,
                            status=DeliveryStatus.sent, sent_at=sent_at, message_id=f"msg-{number}")
        session.add(delivery)
        session.flush()
        return Sent(id=delivery.id, subscriber_id=subscriber.id, issue_id=issue.id, email=email)


def events(engine, **where) -> list[Event]:
    with session_scope(engine) as session:
        return list(session.scalars(select(Event).filter_by(**where).order_by(Event.id)))


def settle_opens(web) -> None:
    """Wait until the app's pixel writer has committed every open handed to it (`OpenWriter.settled`).

    A fetch is answered when its open is handed over; the commit follows within milliseconds.
    """
    web.portal.call(web.app.state.ctx.open_writer().settled)


def token_for(web, delivery: Sent) -> str:
    return recipient_token(web.app.state.ctx.engine, web.app.state.ctx.signer, delivery.subscriber_id, delivery.id)


def assert_pixel(response) -> None:
    assert response.status_code == 200
    assert response.content.startswith(GIF_HEADER) and len(response.content) == 43
    assert response.headers["content-type"] == "image/gif"
    assert response.headers["cache-control"] == "no-store, max-age=0"


def an_hour_ago() -> datetime:
    return datetime.now(timezone.utc) - timedelta(hours=1)


def test_pixel_is_a_gif_that_is_never_cached_for_good_bad_and_garbage_tokens(web):
    "good, forged and garbage tokens all get the 43-byte GIF with no-store; only the good one records"
    ctx = web.app.state.ctx
    delivery = sent_delivery(ctx.engine, sent_at=an_hour_ago())
    good = token_for(web, delivery)
    forged = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    for token in (good, forged, "garbage", "x" * 3000, "%00%ff"):
        assert_pixel(web.get(f"/o/{token}.gif", headers={"User-Agent": HUMAN_UA}))
    settle_opens(web)
    assert len(events(ctx.engine, kind="open")) == 1


def test_every_open_is_recorded_and_the_delivery_counts_once_as_unique(web):
    "three fetches by the reader: three open events (total), one delivery opened (unique)"
    ctx = web.app.state.ctx
    delivery = sent_delivery(ctx.engine, sent_at=an_hour_ago())
    for _ in range(3):
        assert_pixel(web.get(f"/o/{token_for(web, delivery)}.gif", headers={"User-Agent": HUMAN_UA}))
    settle_opens(web)
    opens = events(ctx.engine, kind="open")
    assert len(opens) == 3
    assert {(e.delivery_id, e.subscriber_id, e.issue_id, e.source, e.machine) for e in opens} == {
        (delivery.id, delivery.subscriber_id, delivery.issue_id, "pixel", False)}
    assert opens[0].detail == HUMAN_UA


def test_image_proxies_and_opens_seconds_after_the_send_are_machine_opens(web):
    "Gmail's proxy an hour later and a normal client 2 s after the send are machine; a person 1 h later is human"
    ctx = web.app.state.ctx
    proxied = sent_delivery(ctx.engine, sent_at=an_hour_ago())
    prefetched = sent_delivery(ctx.engine, sent_at=datetime.now(timezone.utc) - timedelta(seconds=2))
    read = sent_delivery(ctx.engine, sent_at=an_hour_ago())
    web.get(f"/o/{token_for(web, proxied)}.gif", headers={"User-Agent": GMAIL_PROXY_UA})
    web.get(f"/o/{token_for(web, prefetched)}.gif", headers={"User-Agent": HUMAN_UA})
    web.get(f"/o/{token_for(web, read)}.gif", headers={"User-Agent": HUMAN_UA})
    settle_opens(web)
    machine = {e.delivery_id: e.machine for e in events(ctx.engine, kind="open")}
    assert machine == {proxied.id: True, prefetched.id: True, read.id: False}


def test_a_head_request_answers_the_pixel_but_records_nothing(web):
    "a prefetcher's HEAD gets the GIF headers and is not an open"
    ctx = web.app.state.ctx
    delivery = sent_delivery(ctx.engine, sent_at=an_hour_ago())
    response = web.head(f"/o/{token_for(web, delivery)}.gif")
    assert response.status_code == 200 and response.headers["content-type"] == "image/gif"
    settle_opens(web)
    assert events(ctx.engine, kind="open") == []


def test_a_database_error_still_returns_the_gif_and_is_logged(web, caplog):
    "the event table is gone (a botched migration): the pixel still answers, and the error is in the log"
    ctx = web.app.state.ctx
    delivery = sent_delivery(ctx.engine, sent_at=an_hour_ago())
    with ctx.engine.begin() as connection:
        connection.execute(text("DROP TABLE event"))
    with caplog.at_level("ERROR", logger="digest.web"):
        assert_pixel(web.get(f"/o/{token_for(web, delivery)}.gif", headers={"User-Agent": HUMAN_UA}))
        settle_opens(web)
    assert any("could not record 1 opens" in record.message and "event" in record.message
               for record in caplog.records)


def test_an_unreachable_database_still_returns_the_gif(caplog):
    "PostgreSQL is down (nothing listens on the port): the pixel answers at once, the writer's error is logged"
    url = "postgresql+psycopg://postgres@127.0.0.1:9/nowhere?connect_timeout=2"
    engine = make_engine(url, pool_pre_ping=False)
    app = create_app(web_settings(url), engine=engine, transport=RecordingTransport())
    token = app.state.ctx.signer.recipient_token(subscriber_id=1, delivery_id=1, tag=1)
    with TestClient(app) as client, caplog.at_level("ERROR", logger="digest.web"):
        assert_pixel(client.get(f"/o/{token}.gif"))
    assert any("could not record 1 opens" in record.message for record in caplog.records)
    engine.dispose()


def test_a_click_redirects_to_the_signed_url_and_records_it(web):
    "a reader's click: 302 to exactly the signed URL, no-store, no-referrer, and a click event on the delivery"
    ctx = web.app.state.ctx
    delivery = sent_delivery(ctx.engine, sent_at=an_hour_ago())
    target = "https://verdicts.example.com/compare/cursor-vs-copilot?utm_source=digest&x=1#panel"
    response = web.get(ctx.links.click(target, token_for(web, delivery)), headers={"User-Agent": HUMAN_UA})
    assert response.status_code == 302
    assert response.headers["location"] == target
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    clicks = events(ctx.engine, kind="click")
    assert [(e.delivery_id, e.issue_id, e.source, e.detail, e.machine) for e in clicks] == [
        (delivery.id, delivery.issue_id, "click", target, False)]


@pytest.mark.parametrize("change", ["last char", "first char", "truncated", "other url"])
def test_an_altered_link_token_is_a_404_and_never_a_redirect(web, change):
    "any change to the link token: the plain 404 page, no Location header, nothing recorded"
    ctx = web.app.state.ctx
    delivery = sent_delivery(ctx.engine, sent_at=an_hour_ago())
    token = ctx.signer.link_token("https://verdicts.example.com/compare/a-vs-b")
    altered = {
        "last char": token[:-1] + ("A" if token[-1] != "A" else "B"),
        "first char": ("X" if token[0] != "X" else "Y") + token[1:],
        "truncated": token[:-5],
        "other url": "Imh0dHBzOi8vZXZpbC5leGFtcGxlIg" + token[token.index("."):],
    }[change]
    response = web.get(f"/c/{altered}?r={token_for(web, delivery)}")
    assert response.status_code == 404
    assert "location" not in response.headers
    assert events(ctx.engine, kind="click") == []


def test_a_click_without_a_valid_recipient_still_redirects_but_records_nothing(web):
    "a forwarded or mangled link (bad or missing r): the reader gets there, no click is recorded"
    ctx = web.app.state.ctx
    delivery = sent_delivery(ctx.engine, sent_at=an_hour_ago())
    target = "https://verdicts.example.com/compare/a-vs-b"
    bad_r = token_for(web, delivery)[:-3] + "zzz"
    for url in (ctx.links.click(target, bad_r), ctx.links.click(target, "")[:-3], ctx.links.click(target, "garbage")):
        response = web.get(url)
        assert response.status_code == 302 and response.headers["location"] == target
    assert events(ctx.engine, kind="click") == []
