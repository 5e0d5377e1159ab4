"""The push API (issue 16, item 1), through HTTP, on SQLite and PostgreSQL: PUT and DELETE
/api/comparisons/{slug} with a bearer token, the import's checks and upsert, 1 MB, unpublishing."""

from __future__ import annotations

import copy
import json
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from digest.claim.opening import open_issue
from digest.config import ConfigError, Settings
from digest.web import create_app
from digest.web.limits import API
from digest.web.security import SECURITY_HEADERS
from storage.db import make_engine, session_scope
from storage.models import Comparison, Review, Tool
from tests.factories import add_subscribers
from tests.fixtures_web import web_settings

TOKEN = "push-api-test-token-0123456789-abcdefghij"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PUBLISHED = "2026-03-02T09:00:00+00:00"
OPENED = datetime(2026, 3, 5, 9, tzinfo=timezone.utc)


def comparison(slug: str = "alpha-vs-beta", title: str = "Alpha vs Beta") -> dict:
    """One comparison as the site sends it: two tools, four reviews each."""
    return {
        "slug": slug, "title": title, "published_at": PUBLISHED, "url": f"https://verdicts.example.com/compare/{slug}",
        "category": "Developer Tools", "community_votes": 57,
        "tools": [{"name": name, "tagline": f"{name} in a line", "entry_price": "$20/mo", "panel_ship_pct": pct,
                   "community_ship_pct": 70,
                   "reviews": [{"persona": persona, "score": 80 - 5 * seat, "text": f"{persona} on {name}.",
                                "verdict": "ship" if seat < pct // 25 else "skip"}
                               for seat, persona in enumerate(("Builder", "Skeptic", "Futurist", "Founder"))]}
                  for name, pct in (("Alpha", 100), ("Beta", 50))],
    }


class Clock:
    def __init__(self):
        self.now = OPENED - timedelta(days=1)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def client_for(db_url: str, clock: Clock, **settings):
    engine = make_engine(db_url)
    app = create_app(web_settings(db_url, **settings), engine=engine, clock=clock)
    return engine, TestClient(app, base_url="http://testserver", follow_redirects=False)


@pytest.fixture
def api(db_url, clock):
    """The app with DIGEST_API_TOKEN set."""
    engine, client = client_for(db_url, clock, api_token=TOKEN)
    with client:
        yield client
    engine.dispose()


def put(client, body, slug: str = "alpha-vs-beta", headers=AUTH):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.put(f"/api/comparisons/{slug}", content=content,
                      headers={**headers, "Content-Type": "application/json"})


def counts(client) -> tuple[int, int, int]:
    """Comparisons, tools and reviews in the store."""
    with session_scope(client.app.state.ctx.engine) as session:
        return tuple(session.scalar(select(func.count()).select_from(table)) for table in (Comparison, Tool, Review))


def stored(client, slug: str = "alpha-vs-beta") -> dict | None:
    """The stored comparison: its columns, and its tools' names with their reviews' (persona, score, text)."""
    with session_scope(client.app.state.ctx.engine) as session:
        row = session.execute(select(Comparison).where(Comparison.slug == slug)).scalar_one_or_none()
        if row is None:
            return None
        return {"title": row.title, "created_at": row.created_at, "updated_at": row.updated_at,
                "community_votes": row.community_votes,
                "tools": [(tool.name, [(r.persona, r.score, r.text) for r in tool.reviews]) for tool in row.tools]}


def assert_secure(response) -> None:
    missing = [name for name in SECURITY_HEADERS if name not in response.headers]
    assert not missing, (response.status_code, missing)
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"] == "application/json"


# -- PUT -----------------------------------------------------------------------------------------------------

def test_a_new_comparison_is_stored_and_answered_201(api, clock):
    "a PUT of a slug the store does not hold: 201, stored with its tools and reviews in order"
    response = put(api, comparison())

    assert response.status_code == 201 and response.json() == {"slug": "alpha-vs-beta", "result": "created"}
    assert_secure(response)
    row = stored(api)
    assert row["title"] == "Alpha vs Beta" and row["community_votes"] == 57
    assert row["created_at"] == row["updated_at"] == clock.now
    assert [name for name, _ in row["tools"]] == ["Alpha", "Beta"]
    assert row["tools"][0][1][1] == ("Skeptic", 75, "Skeptic on Alpha.")
    assert counts(api) == (1, 2, 8)


def test_the_same_body_twice_changes_nothing(api, clock):
    "the same PUT again, a day later: 200 unchanged, and updated_at is still the first PUT's"
    put(api, comparison())
    before = stored(api)
    clock.now += timedelta(days=1)

    response = put(api, comparison())

    assert response.status_code == 200 and response.json() == {"slug": "alpha-vs-beta", "result": "unchanged"}
    assert stored(api) == before
    assert counts(api) == (1, 2, 8)


def test_a_changed_body_updates_it_and_replaces_its_tools_and_reviews(api, clock):
    "a PUT with a new title, a third tool and other reviews: 200 updated, tools and reviews replaced, created_at kept"
    put(api, comparison())
    created = stored(api)["created_at"]
    clock.now += timedelta(hours=3)
    body = comparison(title="Alpha vs Beta vs Gamma")
    body["tools"].append(copy.deepcopy(body["tools"][1]) | {"name": "Gamma"})
    body["tools"][0]["reviews"] = body["tools"][0]["reviews"][:2]
    body["tools"][0]["reviews"][0]["text"] = "Builder changed their mind."

    response = put(api, body)

    assert response.status_code == 200 and response.json() == {"slug": "alpha-vs-beta", "result": "updated"}
    row = stored(api)
    assert row["title"] == "Alpha vs Beta vs Gamma"
    assert row["created_at"] == created and row["updated_at"] == clock.now
    assert [name for name, _ in row["tools"]] == ["Alpha", "Beta", "Gamma"]
    assert row["tools"][0][1] == [("Builder", 80, "Builder changed their mind."), ("Skeptic", 75, "Skeptic on Alpha.")]
    assert counts(api) == (1, 3, 10)  # the old tools and reviews are gone, not left beside the new ones


def test_two_puts_of_the_same_new_slug_at_once_both_succeed(api):
    "another writer inserts the slug and commits while this PUT inserts it too: the PUT becomes an update, not a 500"
    engine = api.app.state.ctx.engine
    with session_scope(engine) as session:
        session.add(Comparison(slug="alpha-vs-beta", title="The rival's title", url="https://verdicts.example.com/",
                               category="Developer Tools", published_at=OPENED))
        session.flush()  # the row is written, not committed: PostgreSQL makes the PUT's insert wait for it
        committer = threading.Timer(0.5, session.commit)
        committer.start()
        started = time.monotonic()
        response = put(api, comparison())
        committer.join()

    assert time.monotonic() - started >= 0.4  # it did wait for the other writer
    assert response.status_code == 200 and response.json()["result"] == "updated"
    assert stored(api)["title"] == "Alpha vs Beta" and counts(api) == (1, 2, 8)


@pytest.mark.parametrize("headers", [
    {}, {"Authorization": "Bearer wrong-token"}, {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN}, {"Authorization": "Bearer"},
    {"Authorization": f"Bearer {TOKEN[:-1]}"}, {"Authorization": "Bearer \u00e9t\u00e9".encode()},
], ids=["none", "wrong", "longer", "basic", "no scheme", "empty", "shorter", "utf-8"])
def test_a_missing_or_wrong_token_gets_one_401_and_stores_nothing(api, headers):
    "no token, a wrong, longer or shorter one, another scheme: the same 401 (status, body, headers), nothing stored"
    reference = put(api, comparison(), headers={"Authorization": "Bearer not-it"})

    response = put(api, comparison(), headers=headers)
    deleted = api.delete("/api/comparisons/alpha-vs-beta", headers=headers)

    for answer in (response, deleted):
        assert answer.status_code == 401
        assert answer.content == reference.content
        assert {k: v for k, v in answer.headers.items() if k != "date"} == \
            {k: v for k, v in reference.headers.items() if k != "date"}
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert_secure(answer)
    assert counts(api) == (0, 0, 0)


def test_the_token_may_follow_the_scheme_after_any_spaces_and_the_scheme_in_any_case(api):
    "RFC 7235: one or more spaces after the scheme, whose case does not matter: 'bearer', two spaces, both accepted"
    created = put(api, comparison(), headers={"Authorization": f"bearer {TOKEN}"})
    again = put(api, comparison(), headers={"Authorization": f"Bearer  {TOKEN}"})

    assert (created.status_code, again.status_code) == (201, 200) and counts(api) == (1, 2, 8)


def test_without_a_configured_token_the_api_answers_503(db_url, clock, caplog):
    "DIGEST_API_TOKEN unset: every PUT and DELETE is 503 saying so, whatever token it carries, logged, nothing stored"
    engine, client = client_for(db_url, clock)
    with client, caplog.at_level("ERROR", logger="digest.web"):
        for headers in ({}, AUTH, {"Authorization": "Bearer "}):
            response = put(client, comparison(), headers=headers)
            assert response.status_code == 503
            assert response.json() == {"error": "the push API is off: no API token is configured"}
            assert caplog.messages[-1] == "push API request refused: DIGEST_API_TOKEN is not set"
            assert_secure(response)
            assert client.delete("/api/comparisons/alpha-vs-beta", headers=headers).status_code == 503
        assert counts(client) == (0, 0, 0)
    engine.dispose()


def test_an_invalid_body_is_422_with_every_error_by_path_and_stores_nothing(api):
    "a score of 130, a verdict 'maybe', no title, an ftp url, a date without offset, an extra field: 422, each by path"
    put(api, comparison())
    before, counted = stored(api), counts(api)
    body = comparison(title="Changed")
    del body["title"]
    body["url"] = "ftp://verdicts.example.com/x"
    body["published_at"] = "2026-03-02T09:00:00"
    body["tools"][0]["reviews"][1]["score"] = 130
    body["tools"][1]["reviews"][0]["verdict"] = "maybe"
    body["tools"][1]["extra"] = 1

    response = put(api, body)

    assert response.status_code == 422
    assert_secure(response)
    errors = response.json()["errors"]
    assert [error["path"] for error in errors] == sorted(
        ["", "url", "published_at", "tools[0].reviews[1].score", "tools[1]", "tools[1].reviews[0].verdict"],
        key=[error["path"] for error in errors].index)  # every one, once (their order is the checker's)
    by_path = {error["path"]: error["message"] for error in errors}
    assert by_path[""] == "'title' is a required property"
    assert by_path["tools[0].reviews[1].score"] == "130 is greater than the maximum of 100"
    assert by_path["tools[1].reviews[0].verdict"] == '"maybe" is not one of "ship", "skip"'
    assert "no UTC offset" in by_path["published_at"] and "http://" in by_path["url"]
    assert "'extra' was unexpected" in by_path["tools[1]"]
    assert stored(api) == before and counts(api) == counted


@pytest.mark.parametrize("votes", [2**31, 10**30])
def test_a_count_the_store_cannot_hold_is_422_not_a_database_error(api, votes):
    "community_votes has no maximum in the contract; past PostgreSQL's INTEGER it is a 422 on its path"
    body = comparison()
    body["community_votes"] = votes

    response = put(api, body)

    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"path": "community_votes", "message": f"{votes} is more than the store can hold (2,147,483,647)"}]
    assert counts(api) == (0, 0, 0)


@pytest.mark.parametrize("raw, message", [
    (b"{\"slug\": ", "line 1, column 10: not valid JSON"),
    (b"\xff{}", "is not UTF-8"),
    (b"[" * 100_000, "not valid JSON"),
    (b"[]", "is an array; it must be an object"),
    (b"\"alpha-vs-beta\"", "is a string; it must be an object"),
])
def test_a_body_that_is_not_one_json_object_is_422_at_the_top(api, raw, message):
    "broken JSON, not UTF-8, nested 100,000 deep, an array, a string: 422 with path \"\", nothing stored"
    response = put(api, raw)

    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["path"] == "" and message in error["message"]
    assert counts(api) == (0, 0, 0)


def test_the_slug_in_the_body_must_be_the_slug_in_the_address(api):
    "a body for alpha-vs-beta PUT to /api/comparisons/gamma-vs-delta: 422 on slug, nothing stored"
    response = put(api, comparison(), slug="gamma-vs-delta")

    assert response.status_code == 422
    assert response.json()["errors"] == [{"path": "slug", "message": '"alpha-vs-beta" is not the slug in the address '
                                                                      '("gamma-vs-delta"): PUT each comparison to '
                                                                      "/api/comparisons/<its slug>"}]
    assert counts(api) == (0, 0, 0)


def test_a_body_past_1_mb_is_413_and_one_just_under_is_stored(api):
    "a comparison of 1 MB + 1 byte: 413 before any check; a valid one of exactly 1 MB: 201"
    body = comparison()
    review = body["tools"][0]["reviews"][0]
    body["tools"][0]["reviews"] = [dict(review, text="x" * 10_000) for _ in range(100)]
    raw = json.dumps(body).encode()
    raw = raw[:-1] + b" " * (API.bytes - len(raw)) + b"}"  # JSON allows the spaces
    assert len(raw) == API.bytes == 1024 * 1024

    too_large = put(api, raw + b" ")

    assert too_large.status_code == 413 and "(1 MB)" in too_large.text
    missing = [name for name in SECURITY_HEADERS if name not in too_large.headers]
    assert not missing
    assert counts(api) == (0, 0, 0)
    assert put(api, raw).status_code == 201


def test_a_get_on_the_api_path_changes_nothing(api):
    "GET and POST on /api/comparisons/{slug}, with the token: 405, nothing stored or removed"
    put(api, comparison())
    before, counted = stored(api), counts(api)

    for method in ("GET", "POST", "PATCH"):
        response = api.request(method, "/api/comparisons/alpha-vs-beta", headers=AUTH, content=json.dumps(comparison()))
        assert response.status_code == 405, method
    assert stored(api) == before and counts(api) == counted


# -- DELETE --------------------------------------------------------------------------------------------------

def test_an_unpublished_comparison_is_never_claimed_and_a_later_put_publishes_it_again(api):
    "DELETE before any issue: 200, the next issue does not claim it; PUT again: 201, and the issue after claims it"
    put(api, comparison())
    put(api, comparison("gamma-vs-delta", "Gamma vs Delta"), slug="gamma-vs-delta")
    engine = api.app.state.ctx.engine
    add_subscribers(engine, 2)

    response = api.delete("/api/comparisons/alpha-vs-beta", headers=AUTH)

    assert response.status_code == 200 and response.json() == {"slug": "alpha-vs-beta", "result": "unpublished"}
    assert_secure(response)
    assert stored(api) is None and counts(api) == (1, 2, 8)
    opened = open_issue(engine=engine, week="2026-W10", now=OPENED)
    assert opened.created and opened.claimed == 1
    assert api.get("/archive/2026-W10").text.count("Alpha vs Beta") == 0
    assert api.delete("/api/comparisons/alpha-vs-beta", headers=AUTH).status_code == 404

    assert put(api, comparison()).status_code == 201
    again = open_issue(engine=engine, week="2026-W11", now=OPENED + timedelta(days=7))
    assert again.created and again.claimed == 1
    assert "Alpha vs Beta" in api.get("/archive/2026-W11").text


def test_unpublishing_a_comparison_already_sent_keeps_it_in_the_issue_and_the_archive(api):
    "DELETE after its issue went out: 200 'kept' with the week, the archive still shows it, nothing deleted"
    put(api, comparison())
    engine = api.app.state.ctx.engine
    add_subscribers(engine, 1)
    assert open_issue(engine=engine, week="2026-W10", now=OPENED).created
    before, counted = stored(api), counts(api)

    response = api.delete("/api/comparisons/alpha-vs-beta", headers=AUTH)

    assert response.status_code == 200
    assert response.json()["result"] == "kept" and response.json()["week"] == "2026-W10"
    assert stored(api) == before and counts(api) == counted
    page = api.get("/archive/2026-W10")
    assert page.status_code == 200 and "Alpha vs Beta" in page.text
    assert open_issue(engine=engine, week="2026-W11", now=OPENED + timedelta(days=7)).issue is None


def test_deleting_an_unknown_slug_is_404(api):
    "DELETE of a slug the store never held: 404 in JSON, nothing changed"
    put(api, comparison())

    response = api.delete("/api/comparisons/never-heard-of-it", headers=AUTH)

    assert response.status_code == 404
    assert response.json() == {"error": 'no comparison with the slug "never-heard-of-it"'}
    assert_secure(response)
    assert counts(api) == (1, 2, 8)


# -- the setting ---------------------------------------------------------------------------------------------

def test_a_placeholder_or_short_api_token_is_refused_at_start_and_never_shown():
    "DIGEST_API_TOKEN unset: fine (the API is off); a placeholder or < 32 characters: ConfigError; never in a repr"
    key = "a-real-secret-key-0123456789"
    Settings(secret_key=key).check_secrets()
    Settings(secret_key=key, api_token=TOKEN).check_secrets()
    for weak in ("change-me", "secret", "x" * 31):
        with pytest.raises(ConfigError, match="DIGEST_API_TOKEN"):
            Settings(secret_key=key, api_token=weak).check_secrets()
    assert TOKEN not in repr(Settings(secret_key=key, api_token=TOKEN))
