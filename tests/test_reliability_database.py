"""Database faults (issue 6, item 3): `digest send` while SQLite is locked by another process, and while
PostgreSQL restarts under it. The send must wait and continue: exit 0, every subscriber sent once.

The PostgreSQL restart uses a cluster of its own (created for the test on a free port, dropped after), so
restarting it cannot break anyone else's tests running against the shared server on 5432.
"""

from __future__ import annotations

import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select, text

from storage.db import make_engine, session_scope
from storage.migrate import upgrade
from storage.models import DeliveryStatus, Issue
from tests.factories import add_comparison
from tests.sendgrid_server import FakeSendGrid
from tests.test_reliability_crash import record
from tests.test_send_sendgrid import NOW, REPO, accepted_addresses, deliveries, env_for, seed
from tests.test_workers import summary

CLUSTER = "digest_reliability"


def _hold_write_lock(path: str, *, seconds: float, held: threading.Event) -> None:
    connection = sqlite3.connect(path, isolation_level=None, timeout=60)
    connection.execute("BEGIN IMMEDIATE")  # the write lock: every other writer waits
    held.set()
    time.sleep(seconds)
    connection.execute("COMMIT")
    connection.close()


def _outcome(db_url: str, server: FakeSendGrid, subscribers: int) -> tuple[int, int, int]:
    copies = accepted_addresses(server)
    rows = deliveries(db_url)
    duplicates = sum(n - 1 for n in copies.values())
    losses = subscribers - len(copies) + sum(r.status != DeliveryStatus.sent.value for r in rows)
    return duplicates, sum(r.ambiguous_resends for r in rows), losses


@pytest.mark.parametrize("when", ["before the send opens the issue", "mid-send"])
def test_sqlite_locked_by_another_process_for_three_seconds_the_send_waits_and_completes(sqlite_url, tmp_path, when):
    "another connection holds SQLite's write lock (BEGIN IMMEDIATE) for 3 s: `digest send` waits, then sends everyone once"
    subscribers = 1500
    seed(sqlite_url, subscribers)
    path = sqlite_url.removeprefix("sqlite:///")
    held = threading.Event()
    with FakeSendGrid(latency=0.05) as server:
        env = env_for(sqlite_url, server, DIGEST_BATCH_SIZE="100")
        locker = threading.Thread(target=_hold_write_lock, kwargs=dict(path=path, seconds=3.0, held=held))
        started = time.monotonic()
        if when.startswith("before"):
            locker.start()
            held.wait(10)
        process = subprocess.Popen([sys.executable, "-m", "digest.cli", "send"], env=env, cwd=tmp_path,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if when == "mid-send":
            while len(server.accepted) < 3 and process.poll() is None:
                time.sleep(0.005)
            locker.start()
        output = process.communicate(timeout=120)[0]
        locker.join()
        elapsed = time.monotonic() - started
        duplicates, counted, losses = _outcome(sqlite_url, server, subscribers)
    record(f"sqlite busy {when}", subscribers=subscribers, lock_seconds=3, returncode=process.returncode,
           duplicates=duplicates, counted_ambiguous=counted, losses=losses, seconds=round(elapsed, 1))
    assert process.returncode == 0, output
    assert elapsed >= 3, "the send waited for the lock"
    assert losses == 0 and duplicates <= counted


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def restartable_postgres():
    """A PostgreSQL cluster of our own (trust auth on 127.0.0.1) and a function that restarts it."""
    if shutil.which("pg_createcluster") is None:
        pytest.fail("pg_createcluster (Debian postgresql-common) is needed to restart a server mid-send",
                    pytrace=False)
    version = sorted(p.name for p in Path("/etc/postgresql").iterdir())[-1]
    port = _free_port()
    subprocess.run(["pg_dropcluster", "--stop", version, CLUSTER], capture_output=True)
    subprocess.run(["pg_createcluster", version, CLUSTER, "-p", str(port), "--",
                    "--auth-local=trust", "--auth-host=trust"], check=True, capture_output=True)
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, CLUSTER, "start"], check=True,
                   capture_output=True)
    admin = create_engine(f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text("CREATE DATABASE digest"))
    admin.dispose()
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/digest"
    upgrade(url)

    def restart() -> float:
        started = time.monotonic()
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, CLUSTER, "restart", "-m", "fast"],
                       check=True, capture_output=True)
        return time.monotonic() - started

    try:
        yield url, restart
    finally:
        subprocess.run(["pg_dropcluster", "--stop", version, CLUSTER], capture_output=True)


def test_postgresql_restarted_mid_send_the_send_waits_and_continues(restartable_postgres, tmp_path):
    "PostgreSQL restarted (fast shutdown) while batches go out: `digest send` reconnects and sends everyone once"
    url, restart = restartable_postgres
    subscribers = 3000
    seed(url, subscribers)
    with FakeSendGrid(latency=0.08) as server:
        env = env_for(url, server, DIGEST_BATCH_SIZE="100")
        started = time.monotonic()
        process = subprocess.Popen([sys.executable, "-m", "digest.cli", "send"], env=env, cwd=tmp_path,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        while len(server.accepted) < 5 and process.poll() is None:
            time.sleep(0.005)
        accepted_at_restart = len(server.accepted)
        down = restart()
        output = process.communicate(timeout=300)[0]
        elapsed = time.monotonic() - started
        duplicates, counted, losses = _outcome(url, server, subscribers)
    record("postgresql restart mid-send", subscribers=subscribers, batches_before_restart=accepted_at_restart,
           restart_seconds=round(down, 1), returncode=process.returncode, duplicates=duplicates,
           counted_ambiguous=counted, losses=losses, seconds=round(elapsed, 1))
    assert accepted_at_restart < subscribers // 100, "the restart happened mid-send"
    assert process.returncode == 0, output
    assert losses == 0 and duplicates <= counted


# -- concurrency (issue 6, item 7) ------------------------------------------------------------------------

@pytest.mark.postgres
def test_two_schedulers_and_two_workers_started_together_send_one_issue_once(postgres_url, tmp_path):
    "two `scheduler.py --once` and two `digest worker --once` at the same instant on one PostgreSQL: one issue, one email each"
    subscribers = 3000
    seed(postgres_url, subscribers)
    engine = make_engine(postgres_url)
    monday = datetime.combine(NOW.date() - timedelta(days=NOW.weekday()), datetime.min.time(), timezone.utc)
    add_comparison(engine, published_at=monday - timedelta(days=1))
    with engine.begin() as connection:  # everything published before this week's Monday 00:00 slot
        connection.exec_driver_sql("UPDATE comparison SET published_at = %s",
                                   (monday.replace(tzinfo=None) - timedelta(hours=1),))
    engine.dispose()
    started = time.monotonic()
    with FakeSendGrid(latency=0.3) as server:  # 30 batches of 100 at 0.3 s: the four overlap for seconds
        env = env_for(postgres_url, server, DIGEST_SEND_SCHEDULE="0 0 * * mon", DIGEST_BATCH_SIZE="100")
        schedulers = [subprocess.Popen([sys.executable, str(REPO / "scheduler.py"), "--once"], env=env, cwd=tmp_path,
                                       stdout=open(tmp_path / f"scheduler{n}.out", "w"), stderr=subprocess.STDOUT)
                      for n in range(2)]
        workers = [subprocess.Popen([sys.executable, "-m", "digest.cli", "worker", "--once"], env=env, cwd=tmp_path,
                                    stdout=open(tmp_path / f"worker{n}.out", "w"),
                                    stderr=open(tmp_path / f"worker{n}.err", "w")) for n in range(2)]
        rounds = 1
        while any(p.poll() is None for p in schedulers):  # a worker that found nothing yet comes back, as a timer would
            for n, process in enumerate(workers):
                if process.poll() is not None and any(p.poll() is None for p in schedulers):
                    rounds += 1
                    name = f"worker{n}-{rounds}"
                    workers[n] = subprocess.Popen([sys.executable, "-m", "digest.cli", "worker", "--once"], env=env,
                                                  cwd=tmp_path, stdout=open(tmp_path / f"{name}.out", "w"),
                                                  stderr=open(tmp_path / f"{name}.err", "w"))
            time.sleep(0.05)
        codes = [p.wait(timeout=120) for p in schedulers + workers]
        copies = accepted_addresses(server)
    outputs = [(tmp_path / f"scheduler{n}.out").read_text()[-1500:] for n in range(2)]
    assert codes == [0, 0, 0, 0], outputs
    worker_sent = sum(summary(tmp_path, path.stem)["sent"] for path in tmp_path.glob("worker*.out"))
    engine = make_engine(postgres_url)
    with session_scope(engine) as session:
        issues = session.execute(select(Issue.week)).scalars().all()
    engine.dispose()
    rows = deliveries(postgres_url)
    duplicates = sum(n - 1 for n in copies.values())
    counted = sum(r.ambiguous_resends for r in rows)
    record("2 schedulers + 2 workers", subscribers=subscribers, issues=len(issues), worker_runs=rounds + 1,
           sent_by_workers=worker_sent, sent_by_schedulers=subscribers - worker_sent, duplicates=duplicates,
           counted_ambiguous=counted, losses=subscribers - len(copies), seconds=round(time.monotonic() - started, 1))
    assert len(issues) == 1
    assert 0 < worker_sent < subscribers, "schedulers and workers both took part"
    assert len(copies) == subscribers and duplicates <= counted
    assert {r.status for r in rows} == {DeliveryStatus.sent.value}
