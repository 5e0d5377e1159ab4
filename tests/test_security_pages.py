"""Tokens and pages (issue 6, items 5 and 6): 10,000 random or altered tokens refused with one answer per
route and no state change; every GET route crawled with valid tokens changes nothing but open/click events;
click redirects never leave their signed target; CSRF on every browser form; security headers on every
page and error; forged, altered, replayed and duplicated webhook posts change nothing.

Covered elsewhere and not repeated here: signup's identical answers and rate limits (test_web_signup.py),
one-click idempotence (test_web_subscriber.py), key rotation (test_web_tokens.py)."""

from __future__ import annotations

import json
import random
import re
import string
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, text

from digest.subscribers.confirmation import ConfirmTokens
from digest.links import Signer
from digest.web import create_app
from digest.claim.opening import open_issue
from storage.db import make_engine, session_scope
from storage.models import Delivery, Event, Subscriber, SubscriberStatus
from tests.factories import RecordingTransport, add_comparison, add_subscribers, recipient_token
from tests.fixtures_web import web_settings
from tests.test_reliability_crash import record
from tests.test_web_tracking import GIF_HEADER

UTC = timezone.utc
NOW = datetime.now(UTC)
WEEK = f"{NOW.isocalendar().year}-W{NOW.isocalendar().week:02d}"
URLSAFE = string.ascii_letters + string.digits + "-_"
TRACKING_KINDS = ("open", "click")


class Site:
    """A migrated SQLite store with an opened issue, its subscribers and a pending signup, behind the app."""

    def __init__(self, url: str, **settings):
        self.engine = make_engine(url)
        add_comparison(self.engine, published_at=NOW - timedelta(days=1), title="Alpha vs Beta", slug="alpha-vs-beta")
        self.subscriber_ids = add_subscribers(self.engine, 3)
        self.issue = open_issue(engine=self.engine, week=WEEK, now=NOW).issue
        with session_scope(self.engine) as session:
            self.deliveries = dict(session.execute(select(Delivery.subscriber_id, Delivery.id)).all())
            session.execute(text("UPDATE delivery SET status = 'sent', sent_at = :at"), {"at": NOW - timedelta(hours=2)})
        self.pending, = add_subscribers(self.engine, 1, status=SubscriberStatus.pending, prefix="pending")
        self.settings = web_settings(url, **settings)
        self.app = create_app(self.settings, engine=self.engine, transport=RecordingTransport())
        self.ctx = self.app.state.ctx
        self.client = TestClient(self.app, base_url="http://testserver", follow_redirects=False)

    def recipient(self, index: int = 0) -> str:
        sid = self.subscriber_ids[index]
        return recipient_token(self.engine, self.ctx.signer, sid, self.deliveries[sid])

    def confirm(self) -> str:
        with session_scope(self.engine) as session:
            pending = session.get(Subscriber, self.pending)
            key, tag = pending.email_key, pending.link_tag
        return ConfirmTokens.for_settings(self.settings, clock=lambda: NOW).dumps(
            subscriber_id=self.pending, email_key=key, name="", categories="", tag=tag)

    def link(self, url: str = "https://verdicts.example.com/compare/alpha-vs-beta") -> str:
        return self.ctx.signer.link_token(url)

    def snapshot(self) -> dict:
        """Every table's row count (events other than opens and clicks), and every subscriber's state."""
        with self.engine.connect() as connection:
            tables = [row[0] for row in connection.exec_driver_sql(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
            counts = {t: connection.exec_driver_sql(f'SELECT count(*) FROM "{t}"').scalar_one()
                      for t in tables if t != "event"}
            counts["event (not open/click)"] = connection.execute(
                select(func.count()).select_from(Event).where(Event.kind.not_in(TRACKING_KINDS))).scalar_one()
            people = connection.execute(select(Subscriber.id, Subscriber.status, Subscriber.categories,
                                               Subscriber.paused_until, Subscriber.unsubscribed_at,
                                               Subscriber.confirmed_at).order_by(Subscriber.id)).all()
            deliveries = connection.execute(select(Delivery.id, Delivery.status).order_by(Delivery.id)).all()
        return {"counts": counts, "subscribers": [tuple(p) for p in people], "deliveries": [tuple(d) for d in deliveries]}

    def tracking_events(self) -> int:
        with self.engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(Event).where(Event.kind.in_(TRACKING_KINDS))).scalar_one()

    def close(self) -> None:
        self.client.close()
        self.engine.dispose()


@pytest.fixture
def site(sqlite_url):
    # With an API token, as a real deployment has one: the APIs answer a caller without it 401, not the 503
    # of an API switched off.
    site = Site(sqlite_url, api_token="crawl-test-api-token-0123456789")
    yield site
    site.close()


# -- 10,000 bad tokens --------------------------------------------------------------------------------------

def altered(rng: random.Random, good: str) -> str:
    """GOOD with one character changed, never the last of a dot-separated part (base64's spare bits)."""
    positions = [i for i, c in enumerate(good) if c != "." and i + 1 < len(good) and good[i + 1] != "."]
    at = rng.choice(positions)
    return good[:at] + rng.choice([c for c in URLSAFE if c != good[at]]) + good[at + 1:]


def bad_token(rng: random.Random, good: str, others: list[str]) -> tuple[str, str]:
    """One bad token of a random kind. Random bytes leave out "/" and "\\": a token ending in a slash is
    answered by Starlette's trailing-slash redirect (307, whatever the token), before any token is read."""
    kind = rng.choice(["random", "altered", "truncated", "other salt or key", "random bytes", "extended"])
    if kind == "random":
        token = "".join(rng.choice(URLSAFE + ".") for _ in range(rng.randint(1, 120)))
    elif kind == "altered":
        token = altered(rng, good)
    elif kind == "truncated":
        token = good[:rng.randint(1, len(good) - 1)]
    elif kind == "other salt or key":
        token = rng.choice(others)
    elif kind == "random bytes":
        raw = bytes(rng.randrange(256) for _ in range(rng.randint(1, 60)))
        token = quote(raw.replace(b"/", b"").replace(b"\\", b""), safe="") or "x"
    else:
        token = good + rng.choice(URLSAFE)
    if token in (".", ".."):  # a dot segment: the client resolves it away (RFC 3986 5.2.4), leaving /confirm/
        token = "x"
    return kind, token


def test_ten_thousand_bad_tokens_get_one_answer_per_route_and_change_nothing(site):
    "10,000 random, altered, truncated, extended and wrong-salt/key tokens on /u /p /o /c /confirm: one answer each"
    rng = random.Random(20261125)
    other_key = "someone-elses-secret-key-000"
    other = Signer(other_key)
    recipient, link, confirm = site.recipient(), site.link(), site.confirm()
    foreign = [other.recipient_token(subscriber_id=site.subscriber_ids[0], delivery_id=1, tag=1),
               other.link_token("https://verdicts.example.com/"),
               ConfirmTokens(other_key, clock=lambda: NOW, max_age=timedelta(days=7)).dumps(
                   subscriber_id=site.pending, email_key="x", name="", categories="", tag=1)]
    routes = {  # name: (good token of that route's kind, wrong-kind tokens, request)
        "GET /u": (recipient, [link, confirm, *foreign], lambda t: site.client.get(f"/u/{t}")),
        "GET /p": (recipient, [link, confirm, *foreign], lambda t: site.client.get(f"/p/{t}")),
        "POST /u one-click": (recipient, [link, confirm, *foreign],
                              lambda t: site.client.post(f"/u/{t}", data={"List-Unsubscribe": "One-Click"})),
        "GET /o": (recipient, [link, confirm, *foreign], lambda t: site.client.get(f"/o/{t}.gif")),
        "GET /c": (link, [recipient, confirm, *foreign], lambda t: site.client.get(f"/c/{t}?r={recipient}")),
        "GET /confirm": (confirm, [recipient, link, *foreign], lambda t: site.client.get(f"/confirm/{t}")),
        "POST /confirm": (confirm, [recipient, link, *foreign], lambda t: site.client.post(f"/confirm/{t}")),
    }
    before, tracked = site.snapshot(), site.tracking_events()
    per_route = 10_000 // len(routes) + 1
    tried = 0
    kinds: dict[str, int] = {}
    started = time.monotonic()
    for name, (good, others, call) in routes.items():
        answers = set()
        for _ in range(per_route):
            kind, token = bad_token(rng, good, others)
            kinds[kind] = kinds.get(kind, 0) + 1
            response = call(token)
            tried += 1
            answers.add((response.status_code, response.content, response.headers.get("content-type")))
        assert len(answers) == 1, f"{name}: {len(answers)} different answers to bad tokens"
        status, body, content_type = answers.pop()
        if name == "GET /o":
            assert status == 200 and body.startswith(GIF_HEADER) and content_type == "image/gif"
        else:
            assert status == 404, name
    assert site.snapshot() == before and site.tracking_events() == tracked, "a bad token changed the store"
    record("bad tokens", requests=tried, routes=len(routes), kinds=kinds, distinct_answers_per_route=1,
           state_changes=0, seconds=round(time.monotonic() - started, 1))
    assert tried >= 10_000


# -- no state change on any GET -----------------------------------------------------------------------------

def all_routes(app) -> list[tuple[str, tuple[str, ...]]]:
    """Every (path, methods) of the app, however deeply its routers are included."""
    found = []

    def walk(routes):
        for route in routes:
            inner = getattr(route, "original_router", None) or getattr(route, "router", None)
            if inner is not None and not hasattr(route, "path"):
                walk(inner.routes)
            elif hasattr(route, "path"):
                found.append((route.path, tuple(sorted(getattr(route, "methods", None) or ("GET",)))))

    walk(app.routes)
    return found


def get_routes(app) -> list[str]:
    """Every GET path of the app, once each."""
    return list(dict.fromkeys(path for path, methods in all_routes(app) if "GET" in methods))


def test_crawling_every_get_route_with_valid_tokens_changes_nothing_but_tracking(site):
    "a link scanner GETs (and HEADs) every route with valid tokens and every form's query: only opens and clicks recorded"
    recipient = site.recipient()
    values = {"token": recipient, "link_token": site.link(), "week": WEEK,
              "slug": "alpha-vs-beta", "tool": "2", "choice": "skip"}  # a vote link (issue 17): a GET only asks
    queries = {"/u/{token}": ["", "?done=1", "?action=unsubscribe", "?List-Unsubscribe=One-Click"],
               "/p/{token}": ["", "?saved=1", "?action=delete&confirm=yes", "?action=unsubscribe"],
               "/c/{link_token}": [f"?r={recipient}"], "/confirm/{token}": ["", "?confirm=1"],
               "/v/{token}/{slug}/{tool}/{choice}": ["", "?done=1", "?choice=ship"]}
    before, tracked = site.snapshot(), site.tracking_events()
    crawled = 0
    for path in get_routes(site.app):
        params = re.findall(r"{(\w+)}", path)
        missing = [p for p in params if p not in values]
        assert not missing, f"{path}: the crawl does not know how to fill {missing}: add a valid value"
        filled = path
        for param in params:
            value = site.confirm() if path.startswith("/confirm") else values[param]
            filled = filled.replace(f"{{{param}}}", value)
        for query in queries.get(path, [""]):
            for method in ("GET", "HEAD"):
                response = site.client.request(method, filled + query)
                crawled += 1
                assert response.status_code < 500, (method, filled + query)
                if path.startswith(("/u/", "/p/{", "/confirm/", "/o/", "/c/", "/v/", "/archive", "/subscribe")) and method == "GET":
                    assert response.status_code in (200, 302), (filled + query, response.status_code)
    assert site.snapshot() == before, "a GET changed the store"
    assert site.tracking_events() > tracked, "the pixel and the click were recorded"
    record("GET crawl", requests=crawled, routes=len(get_routes(site.app)), state_changes=0)


# -- click redirects ----------------------------------------------------------------------------------------

def test_a_click_redirect_goes_only_to_its_signed_target(site):
    "500 signed targets, each tampered with (extra path, query, slashes, backslashes): Location is the signed URL or a 404"
    rng = random.Random(7)
    tampers = ["/..//evil.example", "%2F%2Fevil.example", "/../../evil.example", "\\evil.example"]
    checked = 0
    for n in range(500):
        target = (f"https://{''.join(rng.choices(string.ascii_lowercase, k=8))}.example.com/"
                  f"{quote(''.join(rng.choices(string.printable, k=rng.randint(0, 30))), safe='/?=&')}")
        token = site.link(target)
        response = site.client.get(f"/c/{token}?r={site.recipient(n % 3)}&url=https://evil.example&next=//evil.example")
        assert response.status_code == 302 and response.headers["location"] == target
        for tamper in tampers:
            tampered = site.client.get(f"/c/{token}{tamper}")
            assert tampered.status_code == 404 or tampered.headers.get("location") == target, (target, tamper)
        checked += 1 + len(tampers)
    for scheme in ("javascript:alert(1)", "data:text/html,x", "//evil.example", "ftp://evil.example/"):
        response = site.client.get(f"/c/{site.link(scheme)}")
        assert response.status_code == 404, scheme  # signed by us, but not a web URL: never a redirect
    record("click redirect", requests=checked + 4, left_signed_target=0)


# -- CSRF ---------------------------------------------------------------------------------------------------

def test_every_browser_form_post_without_a_valid_csrf_field_is_refused_and_changes_nothing(site):
    "every form action on /u, /p and /subscribe, with no field, a forged one, or another browser's: 403, nothing changed"
    recipient = site.recipient()
    forms = [("/u/" + recipient, {"action": a}) for a in ("unsubscribe", "resubscribe")]
    forms += [("/p/" + recipient, {"action": a, "category": "Developer Tools", "weeks": "4", "confirm": "yes"})
              for a in ("categories", "pause", "resume", "unsubscribe", "resubscribe", "export", "delete")]
    forms += [("/subscribe", {"email": "new.person@example.com", "name": "New"})]
    page = site.client.get("/p/" + recipient)
    real = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    before = site.snapshot()
    refused = 0
    for path, fields in forms:
        for label, csrf, cookies in [("none", None, {}), ("forged", "0" * 64, {}),
                                     ("another browser's", real, {"digest_csrf": "another-browsers-cookie"})]:
            client = TestClient(site.app, base_url="http://testserver", follow_redirects=False, cookies=cookies)
            data = dict(fields, **({"csrf": csrf} if csrf else {}))
            response = client.post(path, data=data)
            assert response.status_code == 403, (path, fields.get("action"), label, response.status_code)
            refused += 1
    assert site.snapshot() == before
    record("CSRF", form_posts=refused, accepted=0)


# -- security headers ---------------------------------------------------------------------------------------

def test_security_headers_on_every_page_and_every_error(site):
    "every GET route, 404, 405, 400, 403 and 413: CSP with frame-ancestors 'none', nosniff, no-referrer, DENY"
    recipient = site.recipient()
    values = {"token": recipient, "link_token": site.link(), "week": WEEK,
              "slug": "alpha-vs-beta", "tool": "2", "choice": "skip"}  # a vote link (issue 17): a GET only asks
    requests = []
    for path in get_routes(site.app):
        filled = path
        for param in re.findall(r"{(\w+)}", path):
            filled = filled.replace(f"{{{param}}}", site.confirm() if path.startswith("/confirm") else values[param])
        requests.append(("GET", filled, None))
    requests += [("GET", "/nowhere", None), ("GET", "/u/forged", None), ("DELETE", f"/u/{recipient}", None),
                 ("POST", f"/u/{recipient}", {"action": "unsubscribe"}), ("POST", "/subscribe", {"email": "x" * 20000}),
                 ("POST", f"/p/{recipient}", {"action": "nonsense"}), ("GET", "/archive/1999-W99", None),
                 ("POST", "/webhooks/sendgrid", None), ("GET", "/o/garbage.gif", None),
                 ("PUT", "/api/comparisons/x", None), ("DELETE", "/api/comparisons/x", None),
                 ("GET", "/api/comparisons/x", None)]
    statuses = set()
    for method, path, data in requests:
        response = site.client.request(method, path, data=data)
        statuses.add(response.status_code)
        headers = response.headers
        assert "frame-ancestors 'none'" in headers.get("content-security-policy", ""), (method, path)
        assert headers.get("x-content-type-options") == "nosniff", (method, path)
        assert headers.get("referrer-policy") == "no-referrer", (method, path)
        assert headers.get("x-frame-options") == "DENY", (method, path)
        if path.startswith(("/u/", "/p/", "/confirm/")) and method in ("GET", "POST"):
            # (a 405 for another method is the generic error page: it shows no token, and is not a token page)
            assert headers.get("cache-control") == "no-store", (method, path)
    assert {200, 302, 403, 404, 405}.issubset(statuses)
    record("security headers", responses=len(requests), statuses=sorted(statuses), missing_headers=0)


# -- webhook ------------------------------------------------------------------------------------------------

def test_webhook_forged_altered_replayed_and_duplicated_posts_change_nothing(sqlite_url):
    "table: timestamp swapped under a good signature, trailing byte, replay ×3, duplicates in one post, reused event id"
    from tests.test_webhook import PUBLIC_KEY, SIGNATURE, TIMESTAMP, sg_event, signed
    from tests.test_web_tracking import sent_delivery

    engine = make_engine(sqlite_url)
    app = create_app(web_settings(sqlite_url, sendgrid_webhook_public_key=PUBLIC_KEY), engine=engine,
                     transport=RecordingTransport())
    client = TestClient(app, base_url="http://testserver")
    delivery = sent_delivery(engine, sent_at=NOW - timedelta(hours=1))

    def count() -> tuple[int, str]:
        with session_scope(engine) as session:
            events = session.execute(select(func.count()).select_from(Event)).scalar_one()
            status = session.get(Subscriber, delivery.subscriber_id).status
        return events, getattr(status, "value", status)

    first = json.dumps([sg_event(delivery, "delivered", "w-1")])
    assert client.post("/webhooks/sendgrid", content=first, headers=signed(first)).json()["applied"] == 1
    baseline = count()
    bounce = json.dumps([sg_event(delivery, "bounce", "w-2", type="bounce")])
    good = signed(bounce)
    old = signed(bounce, at=time.time() - 3600)
    table = [
        ("timestamp header swapped under a good signature", bounce, {**good, TIMESTAMP: str(int(good[TIMESTAMP]) - 1)}, 403),
        ("a byte appended to a signed body", bounce + " ", good, 403),
        ("a signed post replayed an hour later", bounce, old, 403),
        ("a signed post replayed with a fresh timestamp header", bounce, {**old, TIMESTAMP: good[TIMESTAMP]}, 403),
        ("signature of another body", bounce, signed(first), 403),
        ("signature cut short by four base64 characters", bounce, {**good, SIGNATURE: good[SIGNATURE][:-4]}, 403),
        ("the first post replayed three times", first, signed(first), 200),
        ("", first, signed(first), 200),
        ("", first, signed(first), 200),
        ("one event id twice in one post, one new event id reusing an old id's content",
         json.dumps([sg_event(delivery, "delivered", "w-1"), sg_event(delivery, "delivered", "w-1")]), None, 200),
        ("an old event id with altered content (bounce instead of delivered)",
         json.dumps([sg_event(delivery, "bounce", "w-1", type="bounce")]), None, 200),
    ]
    for label, body, headers, status in table:
        response = client.post("/webhooks/sendgrid", content=body, headers=headers or signed(body))
        assert response.status_code == status, label
        if status == 200:
            assert response.json()["applied"] == 0, label
        assert count() == baseline, f"{label}: the store changed"
    client.close()
    engine.dispose()
    record("webhook table", posts=len(table), applied=0, state_changes=0)
