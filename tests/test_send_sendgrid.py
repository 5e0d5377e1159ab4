"""`digest send` and `python scheduler.py` as processes, through the real sendgrid client, against the local
SendGrid-compatible server: payloads valid by SendGrid's schema, kills, stalls and two schedulers."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select

from storage.db import make_engine, session_scope
from storage.models import Delivery, DeliveryStatus, Issue
from tests.factories import add_comparison, add_subscribers
from tests.sendgrid_server import FakeSendGrid

REPO = Path(__file__).resolve().parents[1]
NOW = datetime.now(timezone.utc)


def env_for(db_url: str, server: FakeSendGrid, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DIGEST_", "SENDGRID_"))}
    env.update(DIGEST_DATABASE_URL=db_url, DIGEST_SECRET_KEY="test-secret-key-0123456789abcdef",
               SENDGRID_API_KEY=server.api_key, DIGEST_SENDGRID_HOST=server.url, DIGEST_TRANSPORT="sendgrid",
               DIGEST_BASE_URL="https://news.example.com", DIGEST_SENDGRID_TIMEOUT="2",
               PYTHONPATH=str(REPO))
    env.update(extra)
    return env


def digest(*args, env, cwd, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "digest.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def seed(db_url: str, subscribers: int, comparisons: int = 3) -> None:
    engine = make_engine(db_url)
    for n in range(comparisons):
        add_comparison(engine, published_at=NOW - timedelta(days=n + 1), category=["Writing", "Developer Tools"][n % 2])
    add_subscribers(engine, subscribers)
    engine.dispose()


def accepted_addresses(server: FakeSendGrid) -> Counter:
    return Counter(p["to"][0]["email"] for body in server.accepted for p in body["personalizations"])


def deliveries(db_url: str) -> list[Delivery]:
    engine = make_engine(db_url)
    with session_scope(engine) as session:
        rows = list(session.execute(select(Delivery)).scalars())
    engine.dispose()
    return rows


def test_digest_send_posts_valid_batches_and_reports_what_it_did(db_url, tmp_path):
    "2,100 subscribers: three schema-valid requests, one personalization each, every delivery sent with its message id"
    seed(db_url, 2100)
    with FakeSendGrid() as server:
        done = digest("send", env=env_for(db_url, server), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert server.requests == 3 and len(server.accepted) == 3
        assert sorted(len(b["personalizations"]) for b in server.accepted) == [100, 1000, 1000]
        assert set(accepted_addresses(server).values()) == {1} and len(accepted_addresses(server)) == 2100
        body = server.accepted[0]
        person = body["personalizations"][0]
        assert set(person["custom_args"]) == {"delivery_id"} and set(body["custom_args"]) == {"issue", "segment"}
        assert person["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert person["headers"]["List-Unsubscribe"].startswith("<https://news.example.com/u/")
        assert body["headers"]["List-Id"] and body["categories"][0] == "weekly-digest"
        assert "[%t%]" in body["content"][1]["value"] and "[%t%]" in person["substitutions"]
        message_ids = set(server.message_ids)
    assert "sent 2100 in 3 batches" in done.stdout
    rows = deliveries(db_url)
    assert {r.status for r in rows} == {DeliveryStatus.sent.value}
    assert {r.message_id for r in rows} == message_ids


def test_nothing_new_to_send_is_a_message_and_exit_status_zero(db_url, tmp_path):
    "no comparison since the last issue: exit 0, says so, no request"
    add_subscribers(make_engine(db_url), 3)
    with FakeSendGrid() as server:
        done = digest("send", env=env_for(db_url, server), cwd=tmp_path)
        assert server.requests == 0
    assert done.returncode == 0 and "no new comparison" in done.stdout


def test_placeholder_secret_is_refused_at_start(db_url, tmp_path):
    "DIGEST_SECRET_KEY=change-me: a clear error, exit 2, nothing sent"
    seed(db_url, 2)
    with FakeSendGrid() as server:
        done = digest("send", env=env_for(db_url, server, DIGEST_SECRET_KEY="change-me"), cwd=tmp_path)
        assert server.requests == 0
    assert done.returncode == 2 and "DIGEST_SECRET_KEY" in done.stderr


def test_a_stalled_request_times_out_is_resent_and_counted(db_url, tmp_path):
    "SendGrid took the batch but answered after our 2 s timeout: one re-send, counted as possible duplicates"
    seed(db_url, 5)
    with FakeSendGrid() as server:
        server.script([("stall", 4)])
        started = time.monotonic()
        done = digest("send", env=env_for(db_url, server), cwd=tmp_path)
        elapsed = time.monotonic() - started
        copies = accepted_addresses(server)
    assert done.returncode == 0, done.stderr
    assert set(copies.values()) == {2}, "the stalled batch was accepted, then sent again"
    assert "5 recipients were handed over again" in done.stdout
    assert [r.ambiguous_resends for r in deliveries(db_url)] == [1] * 5
    assert elapsed < 15, "the request had a timeout"


def test_killed_at_random_points_and_rerun_everyone_gets_exactly_one_copy(db_url, tmp_path):
    "SIGKILL during the send, again and again: in the end each subscriber is sent once, extra copies only where counted"
    seed(db_url, 3000)
    rng = random.Random(20261125)
    with FakeSendGrid(latency=0.06) as server:  # 30 requests of 100: about two seconds of sending
        env = env_for(db_url, server, DIGEST_BATCH_SIZE="100")
        kills = 0
        for _ in range(6):
            process = subprocess.Popen([sys.executable, "-m", "digest.cli", "send"], env=env, cwd=tmp_path,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.7, 1.8))
            if process.poll() is None:
                process.send_signal(signal.SIGKILL)
                kills += 1
            process.wait()
        final = digest("send", env=env, cwd=tmp_path)
        assert final.returncode == 0, final.stderr
        copies = accepted_addresses(server)
    rows = deliveries(db_url)
    assert kills >= 1, "the test must actually kill a send"
    assert len(rows) == 3000 and {r.status for r in rows} == {DeliveryStatus.sent.value}
    assert len(copies) == 3000, "nobody skipped"
    extra = sum(n - 1 for n in copies.values())
    counted = sum(r.ambiguous_resends for r in rows)
    assert extra <= counted, f"{extra} duplicate copies but only {counted} counted as ambiguous"
    print(f"kills={kills} duplicates={extra} counted-ambiguous={counted}")


@pytest.mark.postgres
def test_two_schedulers_started_together_send_one_issue_once(postgres_url, tmp_path):
    "two `python scheduler.py --once` processes on one PostgreSQL: one issue, one email per subscriber"
    seed(postgres_url, 1500)
    with FakeSendGrid() as server:
        # Monday 00:00: this week's slot has always passed, and the seeded comparisons are older than it
        # only if they were published last week; publish them before Monday to be sure.
        env = env_for(postgres_url, server, DIGEST_SEND_SCHEDULE="0 0 * * mon", DIGEST_BATCH_SIZE="100")
        engine = make_engine(postgres_url)
        monday = datetime.combine(NOW.date() - timedelta(days=NOW.weekday()), datetime.min.time(), timezone.utc)
        add_comparison(engine, published_at=monday - timedelta(days=1))
        with engine.begin() as connection:  # everything published before this week's slot
            connection.exec_driver_sql("UPDATE comparison SET published_at = %s", (monday.replace(tzinfo=None) - timedelta(hours=1),))
        engine.dispose()
        procs = [subprocess.Popen([sys.executable, str(REPO / "scheduler.py"), "--once"], env=env, cwd=tmp_path,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
        outputs = [p.communicate(timeout=120)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        copies = accepted_addresses(server)
    assert len(copies) == 1500 and set(copies.values()) == {1}
    engine = make_engine(postgres_url)
    with session_scope(engine) as session:
        assert session.execute(select(Issue.week)).scalars().all().__len__() == 1
    engine.dispose()
