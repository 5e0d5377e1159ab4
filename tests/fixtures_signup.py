"""Fixtures for the signup tests: the app as it runs in production — signup emails rendered and sent by the
signup mailer's own process, through the real `sendgrid` client — against tests/sendgrid_server.py.

Import what a test module uses (`from tests.fixtures_signup import web, sent, ...`): its `web` then takes the
place of tests/fixtures_web.py's, whose recording transport would keep the send inside the test process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from digest.subscribers.signup_mailer import SignupMailer
from digest.transports import make_transport
from digest.web import create_app
from storage.db import make_engine
from tests.fixtures_web import web_settings
from tests.sendgrid_server import FakeSendGrid


@dataclass(frozen=True)
class Mail:
    email: str
    name: str | None  # the To: display name, None when there is none
    subject: str
    text: str
    html: str


class SentMail:
    """What the app's signup mailer has sent, read back from the SendGrid server once the mailer is idle."""

    def __init__(self, client: TestClient, server: FakeSendGrid):
        self._client = client
        self._server = server

    def all(self) -> list[Mail]:
        assert self._client.app.state.signup_mailer.wait_idle(timeout=60), "the signup mailer did not finish"
        return [_mail(body) for body in list(self._server.sandboxed)]

    def to(self, address: str) -> list[Mail]:
        return [mail for mail in self.all() if mail.email.lower() == address.lower()]


def _mail(body: dict) -> Mail:
    [person] = body["personalizations"]
    [to] = person["to"]
    parts = {part["type"]: part["value"] for part in body["content"]}
    return Mail(email=to["email"], name=to.get("name"), subject=body["subject"], text=parts["text/plain"],
                html=parts["text/html"])


def signup_settings(db_url: str, server: FakeSendGrid, **overrides):
    """SendGrid in sandbox mode (the stand-in validates each body and keeps it in `sandboxed`): the links point at
    the TestClient's http://testserver, which a real send refuses (digest.transports.safe_links)."""
    return web_settings(db_url, transport="sendgrid", SENDGRID_API_KEY=server.api_key, sendgrid_host=server.url,
                        sendgrid_timeout=5, sendgrid_sandbox=True, **overrides)


# tools/mutation.py's signup area sets this: a mutation run sees only the calls made in the test's own process,
# and a mailer process started for every test (about a second each) made the area take hours. The mailer is then a
# thread of the test process with the transport its process would build from the same settings; the signup pages,
# which that area mutates, are the same. Unset (CI, every other run), the mailer is its own process, as in production.
MAILER_IN_PROCESS = os.environ.get("DIGEST_TEST_SIGNUP_MAILER") == "thread"


@pytest.fixture
def web(db_url, fake_sendgrid) -> Iterator[TestClient]:
    """The app over a fresh database (SQLite and PostgreSQL), its signup mailer a child process with no
    random wait (the tests read what was sent as soon as it is sent)."""
    engine = make_engine(db_url)
    settings = signup_settings(db_url, fake_sendgrid)
    app = create_app(settings, engine=engine)
    transport = make_transport(settings) if MAILER_IN_PROCESS else None
    app.state.signup_mailer = SignupMailer(settings, transport=transport, spread_seconds=0)
    with TestClient(app, base_url="http://testserver", follow_redirects=False) as client:
        yield client
    engine.dispose()


@pytest.fixture
def sent(web, fake_sendgrid) -> SentMail:
    return SentMail(web, fake_sendgrid)
