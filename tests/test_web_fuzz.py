"""No input gives a 5xx (issue 13, item 4): Hypothesis sends generated paths, methods, query strings, headers
and bodies to every route of the app, in process, on SQLite and PostgreSQL — JSON nested past Python's
recursion limit, ints of 30 digits and more, NUL characters and lone surrogates, form fields with and
without a valid CSRF pair, random bytes, bodies past the route's limit, and webhook posts signed with the
test key so they get past the signature, and comparisons pushed with the API token with some of their
values replaced by any of those. Every answer is below 500 and carries the security headers.

The routes come from `app.routes`: a route added later is fuzzed without touching this file. uvicorn's own
answers (what it refuses before the app runs) are tested on a real `digest serve` in test_web_limits.py.
"""

from __future__ import annotations

import json
import re
import time
from urllib.parse import quote, urlencode

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from digest.web.limits import limit_for
from digest.web.security import SECURITY_HEADERS
from tests.test_api_comparisons import TOKEN as API_TOKEN
from tests.test_api_comparisons import comparison
from tests.test_reliability_crash import record
from tests.test_security_pages import Site, all_routes
from tests.test_webhook import PUBLIC_KEY, signed

EXAMPLES = 10  # per route, method and kind of body, per database: ~1,200 requests in ~20 s on 2 cores
KINDS = ("none", "form", "form+csrf", "json", "deep json", "bytes", "too large")
SIGNED = ("signed events", "signed junk")  # the webhook's, signed with the test key: past the signature
PUSHED = ("comparison",)  # the push API's: a comparison with a few values replaced, sent with the API token
PIECE = 64 * 1024
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
# Field names the app reads (forms, queries, SendGrid events), so the fuzz reaches past "missing field".
FIELDS = ("email", "name", "categories", "category", "action", "weeks", "confirm", "csrf", "one_click",
          "List-Unsubscribe", "r", "done", "saved", "url", "next")
EVENT_KEYS = ("event", "email", "timestamp", "sg_event_id", "delivery_id", "type", "reason", "status",
              "useragent", "url", "response", "sg_machine_open")
EVENT_NAMES = ("processed", "deferred", "delivered", "open", "click", "bounce", "dropped", "spamreport",
               "unsubscribe", "group_unsubscribe", "group_resubscribe", "blocked", "", "OPEN")


# -- values -----------------------------------------------------------------------------------------------

huge_ints = st.sampled_from([10**30, -(10**30), 2**63, 2**63 - 1, 2**64, -1, 0, 10**4000])
# Any text, NUL and lone surrogates included (json.dumps writes a surrogate as a \\udXXX escape).
texts = st.text(st.characters(codec=None, categories=None), max_size=40)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), huge_ints, st.floats(allow_nan=True), texts)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(texts, inner, max_size=4)),
                           max_leaves=12)


def deep(depth: int, opener: str) -> str:
    closer = {"[": "]", "{\"a\":": "}"}[opener]
    return opener * depth + "1" + closer * depth


deep_json = st.builds(deep, st.sampled_from([1100, 5000, 900, 20000, 50]), st.sampled_from(["[", "{\"a\":"]))


def percent(text: str, safe: str = "") -> str:
    """%-encoded UTF-8; a lone surrogate becomes its (invalid) UTF-8 bytes, %ED%A0%80."""
    return quote(text, safe=safe, errors="surrogatepass")


def form(data: dict) -> str:
    return urlencode(data, doseq=True, errors="surrogatepass")


def fields(values=texts):
    return st.dictionaries(st.one_of(st.sampled_from(FIELDS), texts), values, max_size=5)


@st.composite
def event(draw, site: Site) -> dict:
    keys = draw(st.lists(st.sampled_from(EVENT_KEYS), max_size=len(EVENT_KEYS), unique=True))
    item = {key: draw(json_values) for key in keys}
    if draw(st.booleans()):
        item["event"] = draw(st.sampled_from(EVENT_NAMES))
    if draw(st.booleans()):  # a real delivery, or one of the values that used to reach the database
        item["delivery_id"] = draw(st.one_of(st.sampled_from(list(site.deliveries.values())).map(str), huge_ints,
                                             st.floats(), texts, st.lists(st.integers(), max_size=2)))
    if draw(st.booleans()):
        item["email"] = draw(st.sampled_from(["reader0@example.com", "READER1@example.com", "x\x00@example.com"]))
    return item


@st.composite
def pushed_comparison(draw) -> dict:
    """A valid comparison (alpha-vs-beta) with up to three of its values (its own, a tool's, a review's) replaced."""
    item = comparison()
    for _ in range(draw(st.integers(0, 3))):
        target = draw(st.sampled_from([item, item["tools"][0], item["tools"][1]["reviews"][2]]))
        target[draw(st.sampled_from(sorted(target)))] = draw(st.one_of(json_values, huge_ints))
    return item


# -- requests -------------------------------------------------------------------------------------------------

@st.composite
def request(draw, site: Site, route: tuple[str, str], kind: str, csrf: tuple[str, str]) -> dict:
    """One request to ROUTE (path, method) with a body of KIND: the path's parameters filled (valid tokens
    or junk); now and then another method or a junk path."""
    path, method = route
    tokens = {"token": [site.recipient(), site.confirm()], "link_token": [site.link()], "week": [site.issue.week],
              "slug": [comparison()["slug"]]}
    for name in re.findall(r"{(\w+)}", path):
        value = draw(st.one_of(st.sampled_from(tokens.get(name, ["x"])), texts.map(percent)))
        path = path.replace(f"{{{name}}}", value or "x")
    if draw(st.integers(0, 9)) == 0:
        path = "/" + percent(draw(texts), safe="/%")
    if draw(st.integers(0, 4)) == 0:  # now and then: a 405 tests little beyond the router
        method = draw(st.sampled_from(METHODS))
    query = draw(st.one_of(st.just(""), fields().map(form)))
    headers = {"User-Agent": draw(st.sampled_from(["Mozilla/5.0", "GoogleImageProxy", "", "curl/8"]))}
    if path.startswith("/api/") and draw(st.integers(0, 3)):  # mostly with the token: past it, to the checks
        headers["Authorization"] = f"Bearer {API_TOKEN}"
    cookies = {}
    content = b""
    if kind.startswith("form"):
        data = draw(fields())
        if kind == "form+csrf":
            cookies, data["csrf"] = {"digest_csrf": csrf[0]}, csrf[1]
        content = form(data).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif kind in ("json", "deep json"):
        body = json.dumps(draw(json_values)) if kind == "json" else draw(deep_json)
        content, headers["Content-Type"] = body.encode(), "application/json"
    elif kind == "bytes":
        content = draw(st.binary(max_size=300))
        headers["Content-Type"] = draw(st.sampled_from(["application/json", "multipart/form-data; boundary=x",
                                                        "application/x-www-form-urlencoded", "text/plain", "\x7f"]))
    elif kind == "too large":
        content = b"a" * (limit_for(path).bytes + draw(st.sampled_from([1, PIECE])))
    elif kind == "comparison":
        content, headers["Content-Type"] = json.dumps(draw(pushed_comparison())).encode(), "application/json"
    elif kind.startswith("signed"):
        body = (json.dumps(draw(st.lists(event(site), min_size=1, max_size=4))) if kind == "signed events"
                else draw(st.one_of(deep_json, json_values.map(json.dumps))))
        content = body.encode()
        headers.update(signed(body))
    return dict(method=method, url=path + ("?" + query if query else ""), content=content, headers=headers,
                cookies=cookies)


@pytest.fixture
def fuzzed(db_url):
    site = Site(db_url, sendgrid_webhook_public_key=PUBLIC_KEY, api_token=API_TOKEN)
    with TestClient(site.app, base_url="http://testserver", follow_redirects=False) as client:
        page = client.get("/p/" + site.recipient())
        field = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
        yield site, client, (client.cookies["digest_csrf"], field)
    site.close()


def test_no_generated_request_to_any_route_gets_a_5xx_or_goes_without_security_headers(fuzzed):
    "paths, methods, queries, headers and bodies (deep JSON, huge ints, signed events) on every route: < 500, headers"
    site, client, csrf = fuzzed
    routes = [(path, method) for path, methods in all_routes(site.app) for method in methods]
    assert {("/webhooks/sendgrid", "POST"), ("/subscribe", "POST"), ("/p/{token}", "POST")} <= set(routes)
    statuses: dict[int, int] = {}
    started = time.monotonic()

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                     HealthCheck.data_too_large])
    @given(st.data())
    def requests_to(route, kind, data):
        sent = data.draw(request(site, route, kind, csrf))
        client.cookies.clear()
        client.cookies.update(sent.pop("cookies"))
        response = client.request(sent.pop("method"), sent.pop("url"), **sent)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, response.text[:300]
        missing = [name for name in SECURITY_HEADERS if name not in response.headers]
        assert not missing, f"{response.status_code} without {missing}"

    failures = []
    # Route by route and kind by kind: Hypothesis favours the first of a list it samples from, and each
    # pair gets its share this way, however many routes there are.
    pairs = [(route, kind) for route in routes
             for kind in KINDS + {"/webhooks/sendgrid": SIGNED, "/api/comparisons/{slug}": PUSHED}.get(route[0], ())]
    for route, kind in pairs:
        try:
            requests_to(route, kind)
        except Exception as exc:  # noqa: BLE001 — go on with the others, then report every failure
            failures.append(f"{route} {kind}: {type(exc).__name__}: {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
    assert sum(statuses.values()) >= EXAMPLES * len(pairs)
    record("fuzz", database=site.engine.dialect.name, routes=len(routes), examples=sum(statuses.values()),
           seconds=round(time.monotonic() - started, 1), statuses=dict(sorted(statuses.items())), server_errors=0)
