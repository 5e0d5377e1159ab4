"""Votes reach the site (issue 17, item 4), on SQLite and PostgreSQL: the pull API's paging and polling, and
the signed push against a real local receiver that is down for part of the test.

Nothing reaches the internet: the receiver is http.server in a thread on 127.0.0.1. No test sleeps: the
push is given its ``now``, and the receiver checks each signature's time against the same clock.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import select
from typer.testing import CliRunner

import scheduler
from digest.cli.main import cli
from digest.config import Settings
from digest.votes.push import BATCH, push_votes
from digest.web import create_app
from storage.db import make_engine, session_scope
from storage.models import SitePush, VoteEvent
from tests.fixtures_web import web_settings

UTC = timezone.utc
NOW = datetime(2026, 11, 30, 18, 0, tzinfo=UTC)
TOKEN = "votes-api-test-token-0123456789-abcdefghij"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET = "site-webhook-test-secret-0123456789"
MAX_AGE = 300  # seconds: the receiver refuses a signature older (or newer) than this, as a site should


def add_events(engine, count: int, *, cast_at: datetime = NOW, step: timedelta = timedelta(seconds=1)) -> list[int]:
    """``count`` vote events cast from ``cast_at`` on, one a ``step`` apart; their ids in order."""
    with session_scope(engine) as session:
        events = [VoteEvent(comparison="cellmind-vs-quill", tool=1 + n % 2, choice=("ship", "skip")[n % 3 == 0],
                            voter=f"{n:064x}", cast_at=cast_at + n * step) for n in range(count)]
        session.add_all(events)
        session.flush()
        return [event.id for event in events]


def state(engine) -> SitePush:
    with session_scope(engine) as session:
        return session.execute(select(SitePush).where(SitePush.id == 1)).scalar_one()


# -- the site's receiver -------------------------------------------------------------------------------

class Receiver:
    """The site's webhook: checks X-Digest-Signature over the exact body bytes (HMAC-SHA256 of "<t>.<body>",
    ``t`` within MAX_AGE of ``clock``), answers ``status`` (a 3xx with a Location), records what it took."""

    def __init__(self, secret: str = SECRET):
        self.secret, self.clock, self.status = secret.encode(), (lambda: NOW), 200
        self.batches: list[list[int]] = []  # the event ids of each batch taken (answered 2xx)
        self.refused: list[str] = []  # why a post was refused (bad signature)
        self.posts = 0
        self.hang = threading.Event()  # set: the receiver reads the post and never answers (until released)
        self.release = threading.Event()
        self.server = self.thread = None
        self.port = self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/votes"

    @property
    def ids(self) -> list[int]:
        return [event_id for batch in self.batches for event_id in batch]

    def start(self) -> int:
        self.server = ThreadingHTTPServer(("127.0.0.1", getattr(self, "port", 0)), _Handler)
        self.server.daemon_threads, self.server.receiver = True, self
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self.server.server_address[1]

    def stop(self) -> None:
        """Down: nothing listens on the port, so a connection is refused."""
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def verified(self, body: bytes, header: str) -> str | None:
        """Why the signature is refused, or None when it is good."""
        fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
        if not fields.get("t", "").isdigit() or abs(int(fields["t"]) - self.clock().timestamp()) > MAX_AGE:
            return f"stale or missing t in {header!r}"
        expected = hmac.new(self.secret, fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
        return None if hmac.compare_digest(expected, fields.get("v1", "")) else "signature does not match"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        receiver = self.server.receiver
        receiver.posts += 1
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if receiver.hang.is_set():
            receiver.release.wait(30)
            return
        problem = receiver.verified(body, self.headers.get("X-Digest-Signature", ""))
        status = 401 if problem else receiver.status
        if problem:
            receiver.refused.append(problem)
        elif status // 100 == 2:
            assert self.headers["Content-Type"] == "application/json"
            receiver.batches.append([event["id"] for event in json.loads(body)["events"]])
        self.send_response(status)
        if status // 100 == 3:
            self.send_header("Location", f"http://127.0.0.1:{receiver.port}/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    site = Receiver()
    yield site
    if site.server is not None:
        site.stop()


def push_settings(db_url: str, url: str, secret: str = SECRET) -> Settings:
    return Settings(database_url=db_url, secret_key="k" * 32, site_webhook_url=url, site_webhook_secret=secret)


def push(engine, db_url, receiver, now=NOW, secret=SECRET):
    return push_votes(engine=engine, settings=push_settings(db_url, receiver.url, secret), now=now,
                      jitter=lambda: 0.0)


# -- push ----------------------------------------------------------------------------------------------

def test_the_push_sends_1200_events_in_three_signed_batches_in_order(engine, db_url, receiver):
    "1,200 waiting events: one pass POSTs 500, 500 and 200, each signed, in id order; the cursor is at the last"
    ids = add_events(engine, 1200)

    done = push(engine, db_url, receiver)

    assert [len(batch) for batch in receiver.batches] == [BATCH, BATCH, 200] and receiver.refused == []
    assert receiver.ids == ids
    assert (done.sent, done.batches, done.error) == (1200, 3, None)
    assert state(engine).pushed_through == ids[-1] and state(engine).failures == 0
    assert push(engine, db_url, receiver).sent == 0 and receiver.posts == 3  # nothing new: no POST


def test_a_site_down_for_a_day_gets_every_event_once_in_order_when_it_comes_back(engine, db_url, receiver):
    "refused, then 503, for a day: nothing advances and the wait grows to an hour; back up, each event once, in order"
    ids = add_events(engine, 300, cast_at=NOW - timedelta(minutes=5))
    receiver.stop()
    now, waits, errors = NOW, [], []
    for attempt in range(12):
        if attempt == 4:
            receiver.start()
            receiver.status = 503
        receiver.clock = lambda moment=now: moment
        done = push(engine, db_url, receiver, now=now)
        assert done.sent == 0 and done.error and state(engine).pushed_through == 0
        assert push(engine, db_url, receiver, now=now).waiting_until == done.waiting_until  # not due: no POST
        waits.append((done.waiting_until - now).total_seconds())
        errors.append(done.error)
        ids += add_events(engine, 10, cast_at=now)
        now = done.waiting_until
    assert errors == ["unreachable (connection refused)"] * 4 + ["answered HTTP 503 Service Unavailable"] * 8
    assert waits == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600, 3600, 3600, 3600]
    failing = state(engine)
    assert (failing.failures, failing.failing_since, failing.last_error) == (12, NOW, "answered HTTP 503 Service Unavailable")
    assert receiver.posts == 8 and receiver.batches == []  # four refused connections, eight 503s

    receiver.status, now = 200, NOW + timedelta(days=1)
    receiver.clock = lambda: now
    done = push(engine, db_url, receiver, now=now)

    assert receiver.ids == ids and len(set(receiver.ids)) == 420 and done.sent == 420
    back = state(engine)
    assert (back.pushed_through, back.failures, back.failing_since, back.last_error, back.expired) == (ids[-1], 0, None, None, 0)


def test_the_first_failure_is_connection_refused_in_words(engine, db_url, receiver):
    "nothing listens: last_error says the site is unreachable, connection refused; the first wait is 30 s"
    add_events(engine, 3)
    receiver.stop()
    done = push(engine, db_url, receiver)
    assert state(engine).last_error == "unreachable (connection refused)" == done.error
    assert done.waiting_until == NOW + timedelta(seconds=30)


def test_events_older_than_three_days_are_given_up_while_the_site_fails(engine, db_url, receiver, caplog):
    "the site fails; at the next attempt events cast over 3 days ago are passed and counted, one warning; the rest go"
    old = add_events(engine, 5, cast_at=NOW - timedelta(days=3, hours=1))
    recent = add_events(engine, 4, cast_at=NOW - timedelta(hours=1))
    receiver.status = 503
    push(engine, db_url, receiver)
    assert state(engine).expired == 0  # the site had not failed yet: old events are tried like any other

    receiver.status = 200
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="digest.votes.push"):
        done = push(engine, db_url, receiver, now=NOW + timedelta(minutes=1))

    assert done.expired == 5 and state(engine).expired == 5
    assert receiver.ids == recent and not set(old) & set(receiver.ids)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "gave up 5 vote events" in warnings[0] and SECRET not in warnings[0]


def test_a_site_that_does_not_answer_in_time_is_a_failure(engine, db_url, receiver):
    "the site takes the POST and never answers: after DIGEST_SITE_WEBHOOK_TIMEOUT it is a failure and nothing advances"
    add_events(engine, 3)
    receiver.hang.set()
    settings = push_settings(db_url, receiver.url).model_copy(update={"site_webhook_timeout": 0.3})
    done = push_votes(engine=engine, settings=settings, now=NOW)
    assert done.error == "no answer within 0.3 s" == state(engine).last_error
    assert state(engine).pushed_through == 0 and receiver.batches == []


def test_a_redirect_is_a_failure_and_is_not_followed(engine, db_url, receiver):
    "the site answers 302: nothing advances, last_error says redirects are not followed, nothing posted to Location"
    add_events(engine, 3)
    receiver.status = 302
    done = push(engine, db_url, receiver)
    assert done.error.startswith("answered HTTP 302") and "redirects are not followed" in done.error
    assert state(engine).pushed_through == 0 and state(engine).failures == 1
    assert receiver.posts == 1 and receiver.batches == []


def test_a_wrong_secret_fails_the_sites_check_over_the_exact_body(engine, db_url, receiver):
    "pushed with another secret, the site refuses (401) and nothing advances; the signature covers the bytes sent"
    add_events(engine, 2)
    done = push(engine, db_url, receiver, secret="not-the-sites-secret-0123456789")
    assert done.error == "answered HTTP 401 Unauthorized" and receiver.refused == ["signature does not match"]
    assert state(engine).pushed_through == 0

    sent: list[tuple[bytes, str]] = []
    push_votes(engine=engine, settings=push_settings(db_url, receiver.url), now=NOW + timedelta(hours=1),
               post=lambda url, body, headers, timeout: sent.append((body, headers["X-Digest-Signature"])))
    body, header = sent[0]
    assert receiver.verified(body, header).startswith("stale")  # an hour old to the receiver's clock
    receiver.clock = lambda: NOW + timedelta(hours=1)
    assert receiver.verified(body, header) is None
    respaced = json.dumps(json.loads(body)).encode()  # the same JSON, other bytes
    assert respaced != body and receiver.verified(respaced, header) == "signature does not match"


# -- pull ----------------------------------------------------------------------------------------------

@pytest.fixture
def api(db_url):
    engine = make_engine(db_url)
    app = create_app(web_settings(db_url, api_token=TOKEN), engine=engine)
    with TestClient(app, base_url="http://testserver", follow_redirects=False) as client:
        yield client
    engine.dispose()


def pull(client, **params):
    response = client.get("/api/votes", params=params, headers=AUTH)
    assert response.headers["cache-control"] == "no-store" and response.headers["content-type"] == "application/json"
    return response


def test_paging_through_250_events_100_at_a_time_gets_each_once_in_order(api):
    "no cursor, then each answer's next: pages of 100, 100 and 50, every event once, in id order, in the push's shape"
    ids = add_events(api.app.state.ctx.engine, 250)
    seen, cursor, sizes = [], None, []
    for _ in range(3):
        page = pull(api, limit=100, **({"after": cursor} if cursor else {})).json()
        sizes.append(len(page["events"]))
        seen += page["events"]
        cursor = page["next"]
    assert sizes == [100, 100, 50] and [event["id"] for event in seen] == ids and cursor == str(ids[-1])
    assert seen[0] == {"id": ids[0], "comparison": "cellmind-vs-quill", "tool": 1, "choice": "skip",
                       "voter": f"{0:064x}", "cast_at": NOW.isoformat(), "replaces": None}


def test_polling_with_the_last_cursor_gets_nothing_then_the_new_events(api):
    "the last next again: no events and the same cursor back; after two new votes, exactly those two"
    engine = api.app.state.ctx.engine
    first = pull(api).json()
    assert first == {"events": [], "next": "0"}
    ids = add_events(engine, 3)
    cursor = pull(api, after=first["next"]).json()["next"]
    assert pull(api, after=cursor).json() == {"events": [], "next": cursor}
    new = add_events(engine, 2, cast_at=NOW + timedelta(minutes=1))
    page = pull(api, after=cursor).json()
    assert [event["id"] for event in page["events"]] == new and page["next"] == str(new[-1]) and cursor == str(ids[-1])


@pytest.mark.parametrize("params, path", [
    ({"limit": "0"}, "limit"), ({"limit": "1001"}, "limit"), ({"limit": "ten"}, "limit"), ({"limit": "-5"}, "limit"),
    ({"after": "abc"}, "after"), ({"after": "-1"}, "after"), ({"after": "1" * 19}, "after"), ({"after": "١"}, "after"),
])
def test_a_bad_limit_or_cursor_is_422_naming_it(api, params, path):
    "a limit outside 1..1000 or a cursor that is not one the API gives: 422 {errors: [{path, message}]}"
    response = pull(api, **params)
    assert response.status_code == 422
    assert [error["path"] for error in response.json()["errors"]] == [path]


def test_a_refusal_quotes_what_was_sent_and_says_what_to_send(api):
    "both parameters wrong: both named, each quoting the value sent (clipped to 40 characters, an empty one as \"\")"
    errors = [pull(api, **params).json()["errors"] for params in ({"after": "x" * 60, "limit": ""},
                                                                   {"after": "", "limit": "9" * 60})]

    cursor = "is not a cursor this API gave: send the `next` of the last answer, or no `after`"
    size = "is not a number of events from 1 to 1000"
    assert errors == [
        [{"path": "after", "message": f'"{"x" * 38}… {cursor}'}, {"path": "limit", "message": f'"" {size}'}],
        [{"path": "after", "message": f'"" {cursor}'}, {"path": "limit", "message": f'"{"9" * 38}… {size}'}],
    ]


def test_a_page_of_one_event_and_a_cursor_of_18_digits_are_accepted(api):
    "limit=1 answers one event, its id the next cursor; the largest cursor the API takes, 18 nines, is nothing new"
    ids = add_events(api.app.state.ctx.engine, 3)

    assert [(event["id"], page["next"]) for page in [pull(api, limit="1").json()] for event in page["events"]] == \
        [(ids[0], str(ids[0]))]
    assert pull(api, limit="2", after=str(ids[0])).json()["next"] == str(ids[2])
    assert pull(api, after="9" * 18).json() == {"events": [], "next": "9" * 18}


def test_the_votes_api_needs_the_token_as_the_push_api_does(api, db_url):
    "missing, malformed or wrong token: the one 401; no DIGEST_API_TOKEN: 503; the right token and 1000: 200"
    answers = [api.get("/api/votes", headers=headers) for headers in
               ({}, {"Authorization": TOKEN}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"})]
    assert {(r.status_code, r.text, r.headers["www-authenticate"]) for r in answers} == {
        (401, '{"error":"send the API token as Authorization: Bearer <token>"}', 'Bearer realm="digest"')}
    assert all(r.headers["cache-control"] == "no-store" for r in answers)
    assert pull(api, limit="1000").status_code == 200
    engine = make_engine(db_url)
    with TestClient(create_app(web_settings(db_url), engine=engine), base_url="http://testserver") as off:
        response = off.get("/api/votes", headers=AUTH)
    engine.dispose()
    assert response.status_code == 503 and response.json() == {"error": "the votes API is off: no API token is configured"}


# -- settings, the command and the scheduler -----------------------------------------------------------

@pytest.mark.parametrize("values, words", [
    ({"site_webhook_url": "ftp://site.example/hook", "site_webhook_secret": SECRET}, "only http:// and https://"),
    ({"site_webhook_url": "file:///etc/passwd", "site_webhook_secret": SECRET}, "only http:// and https://"),
    ({"site_webhook_url": "https://site.example/hook"}, "DIGEST_SITE_WEBHOOK_SECRET is required"),
])
def test_an_unusable_webhook_setting_is_refused_at_start(values, words):
    "a URL that is not http(s), or a URL without its secret: the settings refuse it, saying which and why"
    with pytest.raises(ValidationError, match=words):
        Settings(secret_key="k" * 32, **values)


def test_digest_votes_push_says_what_it_sent_and_fails_while_the_site_does(engine, db_url, receiver, monkeypatch):
    "the command sends what waits and says so (exit 0); with the site answering 503 it says why and exits 1"
    for name, value in {"DATABASE_URL": db_url, "SECRET_KEY": "k" * 32, "SITE_WEBHOOK_URL": receiver.url,
                        "SITE_WEBHOOK_SECRET": SECRET}.items():
        monkeypatch.setenv(f"DIGEST_{name}", value)
    receiver.clock = lambda: datetime.now(UTC)
    ids = add_events(engine, 7)

    sent = CliRunner().invoke(cli, ["votes", "push"])
    assert sent.exit_code == 0, sent.output
    assert "sent 7 vote events in 1 batch" in sent.output and receiver.ids == ids

    add_events(engine, 2)
    receiver.status = 503
    failed = CliRunner().invoke(cli, ["votes", "push"])
    assert failed.exit_code == 1 and "answered HTTP 503" in failed.output and "next attempt" in failed.output
    waiting = CliRunner().invoke(cli, ["votes", "push"])
    assert waiting.exit_code == 1 and "waiting" in waiting.output and SECRET not in waiting.output + failed.output


def test_the_scheduler_pushes_every_minute_only_with_a_webhook():
    "DIGEST_SITE_WEBHOOK_URL set: a site-push job every minute beside the weekly ones; unset: no such job"
    class Wired:
        def __init__(self, settings):
            self.settings = settings

    with_hook = push_settings("sqlite:///unused.db", "https://site.example/hooks/votes")
    jobs = {job.id: job for job in scheduler.build_scheduler(Wired(with_hook), sender=None).get_jobs()}
    assert set(jobs) == {"weekly", "catch-up", "sunset", "site-push"}
    assert jobs["site-push"].trigger.interval == timedelta(minutes=1) and jobs["site-push"].max_instances == 1
    plain = Settings(secret_key="k" * 32)
    assert "site-push" not in {job.id for job in scheduler.build_scheduler(Wired(plain), sender=None).get_jobs()}
