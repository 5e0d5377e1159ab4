"""Issue 18, items 1 and 2, against the local SendGrid stand-in (tests/sendgrid_server.py): SendGrid's own tracking
is off in every request, and no real send goes out with links readers cannot safely follow. `digest doctor`
(item 6) is in tests/test_doctor.py."""

from __future__ import annotations

import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from digest.config import Settings
from digest.subscribers.signup_mailer import SignupMailer
from digest.transports import make_transport
from digest.transports.safe_links import UnsafeLinks, base_url_problem
from digest.transports.sendgrid import SendGridTransport
from digest.web import create_app
from storage.db import make_engine, session_scope
from storage.models import DeliveryStatus, Issue, IssueComparison
from tests.fixtures_signup import signup_settings
from tests.sendgrid_server import FakeSendGrid
from tests.test_send_sendgrid import REPO, deliveries, digest, env_for, seed
from tests.test_transport_sendgrid import batch

# SendGrid's tracking_settings, as its schema names them, all off.
OFF = {"click_tracking": {"enable": False, "enable_text": False}, "open_tracking": {"enable": False},
       "subscription_tracking": {"enable": False}}
UNSAFE = "http://127.0.0.1:8000"
FIX = "set DIGEST_BASE_URL to the https:// address readers reach `digest serve` at"


def counts(db_url: str) -> tuple[int, int]:
    """(issues, claimed comparisons) in the store."""
    engine = make_engine(db_url)
    with session_scope(engine) as session:
        found = (session.scalar(select(func.count()).select_from(Issue)),
                 session.scalar(select(func.count()).select_from(IssueComparison)))
    engine.dispose()
    return found


def sendgrid_settings(server: FakeSendGrid, **overrides) -> Settings:
    values = dict(secret_key="k" * 32, transport="sendgrid", SENDGRID_API_KEY=server.api_key, sendgrid_host=server.url,
                  sendgrid_timeout=2, base_url="https://news.example.com")
    return Settings(**{**values, **overrides})


# -- item 1: we track, SendGrid does not -----------------------------------------------------------------------

def test_every_request_of_a_send_and_of_a_test_send_turns_sendgrids_tracking_off(sqlite_url, tmp_path):
    """1,500 readers in two requests, then a --test-to: each body carries tracking_settings with all three off"""
    seed(sqlite_url, 1500)
    with FakeSendGrid() as server:
        sent = digest("send", env=env_for(sqlite_url, server), cwd=tmp_path)
        tested = digest("send", "--test-to", "editor@example.org", env=env_for(sqlite_url, server), cwd=tmp_path)
        bodies = list(server.accepted)
    assert sent.returncode == 0 and tested.returncode == 0, sent.stderr + tested.stderr
    assert len(bodies) == 3 and [body["tracking_settings"] for body in bodies] == [OFF] * 3


def test_account_tracking_leaves_tracking_settings_out_of_the_request(fake_sendgrid):
    """DIGEST_SENDGRID_TRACKING=account: the request has no tracking_settings, so the account's settings apply"""
    make_transport(sendgrid_settings(fake_sendgrid, sendgrid_tracking="account")).send(batch())
    make_transport(sendgrid_settings(fake_sendgrid)).send(batch())
    account, ours = fake_sendgrid.accepted
    assert "tracking_settings" not in account
    assert ours["tracking_settings"] == OFF


def test_the_signup_confirmation_turns_tracking_off_too(db_url, fake_sendgrid):
    """a signup's confirmation, sent by the signup mailer's own process, carries the same tracking_settings"""
    settings = signup_settings(db_url, fake_sendgrid)
    app = create_app(settings, engine=make_engine(db_url))
    app.state.signup_mailer = SignupMailer(settings, spread_seconds=0)
    with TestClient(app, base_url="http://testserver") as client:
        assert client.post("/subscribe", json={"email": "new@example.org"}).status_code == 202
        assert app.state.signup_mailer.wait_idle(timeout=60)
    [body] = fake_sendgrid.sandboxed
    assert body["personalizations"][0]["to"][0]["email"] == "new@example.org"
    assert body["tracking_settings"] == OFF


# -- item 2: no real send with unsafe links ----------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "http://news.example.com", "https://127.0.0.1", "https://127.8.9.10:8000", "https://[::1]:8000", "https://localhost",
    "https://app.localhost", "https://10.0.0.5", "https://172.16.0.1", "https://172.31.255.254", "https://192.168.1.20",
    "https://169.254.169.254", "https://[fc00::1]", "https://[fd12:3456::1]", "https://[fe80::1]", "https://printer.local",
    "https://testserver", "https://intranet/digest", "https://[::ffff:10.0.0.1]", "https://0.0.0.0",
    "https://user:password@news.example.com", "https://"])
def test_a_base_url_readers_cannot_safely_reach_is_unsafe(url):
    """not https, a loopback, private or link-local address, a local name or one with no dot: unsafe"""
    assert base_url_problem(url)


@pytest.mark.parametrize("url", ["https://news.example.com", "https://verdicts.example.org/digest",
                                 "https://NEWS.Example.COM.", "https://172.32.0.1", "https://[2606:4700::1111]:8443"])
def test_a_public_https_base_url_is_safe(url):
    """https on a public name or address: safe"""
    assert base_url_problem(url) is None


@pytest.mark.parametrize("command", [("send",), ("send", "--test-to", "editor@example.org")],
                         ids=["send", "test-to"])
def test_a_send_with_local_links_is_one_line_exit_2_before_anything_happens(db_url, tmp_path, command):
    """DIGEST_BASE_URL=http://127.0.0.1:8000: one line naming the setting and the fix, exit 2, no request, no issue"""
    seed(db_url, 3)
    with FakeSendGrid() as server:
        done = digest(*command, env=env_for(db_url, server, DIGEST_BASE_URL=UNSAFE), cwd=tmp_path)
        assert server.requests == 0
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "DIGEST_BASE_URL" in done.stderr and FIX in done.stderr
    assert counts(db_url) == (0, 0), "no issue opened, no comparison claimed"


def test_a_worker_and_the_scheduler_refuse_an_interrupted_issue_and_leave_it_pending(db_url, tmp_path):
    """an issue left pending by a failed send: with local links `digest worker` and the scheduler exit 2, sending none"""
    seed(db_url, 3)
    with FakeSendGrid() as server:
        server.script([("status", 503, {})])
        first = digest("send", env=env_for(db_url, server, DIGEST_MAX_ATTEMPTS="1"), cwd=tmp_path)
        assert first.returncode == 1 and {d.status for d in deliveries(db_url)} == {DeliveryStatus.pending.value}
        env = env_for(db_url, server, DIGEST_BASE_URL=UNSAFE)
        worker = digest("worker", "--once", env=env, cwd=tmp_path)
        scheduler = subprocess.run([sys.executable, str(REPO / "scheduler.py"), "--once"], env=env, cwd=tmp_path,
                                   capture_output=True, text=True, timeout=120)
        assert server.requests == 1, "only the first send's refused request"
    assert worker.returncode == 2 and FIX in worker.stderr and len(worker.stderr.strip().splitlines()) == 1
    assert scheduler.returncode == 2 and FIX in scheduler.stderr
    assert {d.status for d in deliveries(db_url)} == {DeliveryStatus.pending.value}


def test_digest_serve_refuses_to_start_rather_than_send_signup_mail_with_local_links(sqlite_url, tmp_path):
    """`digest serve` with SendGrid and local links: one line, exit 2, before it listens"""
    with FakeSendGrid() as server:
        done = digest("serve", "--port", "1", env=env_for(sqlite_url, server, DIGEST_BASE_URL=UNSAFE), cwd=tmp_path)
        assert server.requests == 0
    assert done.returncode == 2 and FIX in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_sandbox_mode_and_the_outbox_send_with_local_links(sqlite_url, tmp_path):
    """sandbox mode delivers nothing and the outbox only writes files: both send with http://127.0.0.1 links"""
    seed(sqlite_url, 3)
    with FakeSendGrid() as server:
        sandboxed = digest("send", "--test-to", "editor@example.org", cwd=tmp_path,
                           env=env_for(sqlite_url, server, DIGEST_BASE_URL=UNSAFE, DIGEST_SENDGRID_SANDBOX="true"))
        outbox = digest("send", cwd=tmp_path, env=env_for(sqlite_url, server, DIGEST_BASE_URL=UNSAFE,
                                                          DIGEST_TRANSPORT="outbox", DIGEST_OUTBOX_DIR="out"))
        assert len(server.sandboxed) == 1 and server.accepted == []
    assert sandboxed.returncode == 0, sandboxed.stderr
    assert outbox.returncode == 0, outbox.stderr
    assert len(list((tmp_path / "out").rglob("*.eml"))) == 3


def test_the_transport_itself_refuses_local_links_before_any_request(fake_sendgrid):
    """built by make_transport with local links, the SendGrid transport raises at send and posts nothing"""
    transport = make_transport(sendgrid_settings(fake_sendgrid, base_url=UNSAFE))
    with pytest.raises(UnsafeLinks, match="DIGEST_BASE_URL"):
        transport.send(batch())
    assert fake_sendgrid.requests == 0
    sandbox = SendGridTransport(api_key=fake_sendgrid.api_key, host=fake_sendgrid.url, timeout=2, sandbox=True,
                                base_url=UNSAFE)
    sandbox.send(batch())
    assert fake_sendgrid.requests == 1 and len(fake_sendgrid.sandboxed) == 1


def test_the_refusal_quotes_the_url_and_says_what_is_wrong_with_it(sqlite_url, tmp_path):
    """https://testserver: the line quotes the value as set and says a name with no dot resolves only here"""
    with FakeSendGrid() as server:
        done = digest("send", env=env_for(sqlite_url, server, DIGEST_BASE_URL="https://testserver"), cwd=tmp_path)
        assert server.requests == 0
    assert done.returncode == 2 and "'https://testserver'" in done.stderr and "no dot" in done.stderr
