"""Two `digest worker` processes as two hosts: each in its own network namespace (tests/netns.py), reaching
PostgreSQL and SendGrid only over its own veth link, nothing shared on loopback.

What stands for what: PostgreSQL listens on this machine's loopback, so a forwarder in the test process carries
each host's connections from its link to it, as a network would; SendGrid is one fake server per link (each
bound to our end of it), so that every request says which host made it — together they are the one provider,
and a reader's copies are counted over both. Cutting a host takes our end of its link down: its packets are
dropped, and the worker, still running, is not told.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from storage.db import make_engine, session_scope
from storage.models import Delivery, DeliveryStatus
from tests.netns import Forwarder, Host, hosts
from tests.sendgrid_server import FakeSendGrid
from tests.test_send_sendgrid import accepted_addresses, deliveries, env_for
from tests.test_workers import opened, summary, unsent, wait_for

pytestmark = pytest.mark.postgres

SUBSCRIBERS = 2000  # 20 batches of 100
LEASE_SECONDS = 4
LATENCY = 0.2  # seconds per request at the fake SendGrid: 20 batches take a few seconds, both hosts get some
# A cut-off host's calls fail in seconds rather than hang on TCP's retransmissions (docs/deploy.md, "Beyond one
# host"); its database calls are retried for DIGEST_DB_RETRY_SECONDS, well past the cut.
DB_TIMEOUTS = {"connect_timeout": "2", "tcp_user_timeout": "2000"}


def host_env(postgres_url: str, database: Forwarder, host: Host, server: FakeSendGrid) -> dict[str, str]:
    """A worker's settings on ``host``: the database and SendGrid at the host's gateway, short timeouts."""
    url = make_url(postgres_url).set(host=host.gateway, port=database.listen(host.gateway), query=DB_TIMEOUTS)
    return env_for(url.render_as_string(hide_password=False), server, DIGEST_BATCH_SIZE="100",
                   DIGEST_LEASE_SECONDS=str(LEASE_SECONDS), DIGEST_SENDGRID_TIMEOUT="1",
                   DIGEST_WORKER_IDLE_SECONDS="0.2", DIGEST_DB_RETRY_SECONDS="60")


def start_worker(host: Host, env: dict[str, str], cwd: Path, *args: str) -> subprocess.Popen:
    command = host.command(sys.executable, "-m", "digest.cli", "worker", *args)
    return subprocess.Popen(command, env=env, cwd=cwd, stdout=open(cwd / f"{host.name}.out", "w"),
                            stderr=open(cwd / f"{host.name}.err", "w"), text=True)


def database_forwarder(postgres_url: str) -> Forwarder:
    url = make_url(postgres_url)
    return Forwarder((url.host, url.port or 5432))


def copies_over(*servers: FakeSendGrid) -> Counter:
    return sum((accepted_addresses(server) for server in servers), Counter())


def leases_of(postgres_url: str, host: str) -> list[Delivery]:
    """The deliveries leased by a worker on ``host`` (lease owners are host:pid:random)."""
    engine = make_engine(postgres_url)
    with session_scope(engine) as session:
        rows = list(session.execute(select(Delivery).where(
            Delivery.status == DeliveryStatus.sending.value, Delivery.lease_owner.startswith(f"{host}:"))).scalars())
    engine.dispose()
    return rows


def stop(*workers: subprocess.Popen) -> list[int]:
    for worker in workers:
        worker.send_signal(signal.SIGTERM)
    return [worker.wait(timeout=60) for worker in workers]


def test_two_hosts_send_one_issue_exactly_once(postgres_url, tmp_path):
    "two workers on two hosts, each over its own link: both send, every reader gets exactly one copy"
    opened(postgres_url, SUBSCRIBERS)
    with hosts("host-a", "host-b") as (a, b), database_forwarder(postgres_url) as database, \
            FakeSendGrid(host=a.gateway, latency=LATENCY) as seen_by_a, \
            FakeSendGrid(host=b.gateway, latency=LATENCY) as seen_by_b:
        port = make_url(postgres_url).port or 5432
        probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"
        assert subprocess.run(a.command(sys.executable, "-c", probe), capture_output=True).returncode != 0, \
            "a host does not reach PostgreSQL on loopback: only over its link"
        workers = [start_worker(host, host_env(postgres_url, database, host, server), tmp_path, "--once")
                   for host, server in ((a, seen_by_a), (b, seen_by_b))]
        try:
            assert [w.wait(timeout=120) for w in workers] == [0, 0]
        finally:
            for w in workers:
                w.kill()
        copies = copies_over(seen_by_a, seen_by_b)
    figures = {name: summary(tmp_path, name) for name in ("host-a", "host-b")}
    assert all(f["sent"] > 0 for f in figures.values()), f"both hosts took batches: {figures}"
    assert sum(f["sent"] for f in figures.values()) == SUBSCRIBERS
    assert set(copies.values()) == {1} and len(copies) == SUBSCRIBERS
    rows = deliveries(postgres_url)
    assert {r.status for r in rows} == {DeliveryStatus.sent.value} and sum(r.ambiguous_resends for r in rows) == 0


class SentAgainAfterComeback(AssertionError):
    """The cut-off host, back on the network, posted rows that the other host had taken over and sent."""


def test_a_host_cut_off_mid_send_loses_its_leases_to_the_other_and_sends_nothing_when_it_comes_back(
        postgres_url, tmp_path):
    "host-a is cut off holding leases it has not posted: host-b sends them once they end; host-a, back, sends nothing"
    # The case exercised, made deterministic: host-a's request is answered 429, so SendGrid did not take that batch;
    # host-a extends its lease past the reset and sleeps until then, and we cut its link in that sleep. What host-a
    # holds then (that batch, and the next one if it leases ahead) never reached SendGrid, so every reader must
    # end with exactly one copy. Host-b cannot know that, so the rows it takes over are counted as possible
    # duplicates (ambiguous_resends = 1 each): counted, not sent twice.
    opened(postgres_url, SUBSCRIBERS)
    with hosts("host-a", "host-b") as (a, b), database_forwarder(postgres_url) as database, \
            FakeSendGrid(host=a.gateway, latency=LATENCY) as seen_by_a, \
            FakeSendGrid(host=b.gateway, latency=LATENCY) as seen_by_b:
        cut_off = start_worker(a, host_env(postgres_url, database, a, seen_by_a), tmp_path)
        other = start_worker(b, host_env(postgres_url, database, b, seen_by_b), tmp_path)
        try:
            wait_for(lambda: seen_by_a.requests >= 2 and seen_by_b.requests >= 1, 60, "both hosts to send")
            reset = int(time.time()) + 4  # host-a sleeps 3–4 s: time to see it and cut
            seen_by_a.script([("status", 429, {"X-RateLimit-Reset": str(reset)})])  # host-a's next request
            # A lease taken before the 429 ends LEASE_SECONDS after its claim, before reset + LEASE_SECONDS; the
            # refused batch's, extended over the wait, ends after it: then host-a sleeps until the reset.
            extended_past = datetime.fromtimestamp(reset, timezone.utc) + timedelta(seconds=LEASE_SECONDS)
            wait_for(lambda: any(r.leased_until >= extended_past for r in leases_of(postgres_url, "host-a")), 30,
                     "host-a to extend its lease over the 429")
            a.cut()
            held = leases_of(postgres_url, "host-a")
            posted_by_a = len(seen_by_a.accepted)
            assert sum(r.leased_until >= extended_past for r in held) == 100, "the refused batch, extended"
            assert not {r.id for r in held} & posted_ids(seen_by_a), "nothing host-a holds reached SendGrid"

            wait_for(lambda: unsent(postgres_url) == 0, 60, "host-b to send every delivery, host-a's too")
            rows = {r.id: r for r in deliveries(postgres_url)}
            copies = copies_over(seen_by_a, seen_by_b)
            assert set(copies.values()) == {1} and len(copies) == SUBSCRIBERS, "every reader exactly one copy"
            posted_by_b = post_times(seen_by_b)
            assert all(posted_by_b[r.id] >= r.leased_until.timestamp() for r in held), "after host-a's lease ended"
            assert {rows[r.id].message_id for r in held} <= set(seen_by_b.message_ids), "host-b sent them"
            assert {i for i, r in rows.items() if r.ambiguous_resends} == {r.id for r in held}
            assert {rows[r.id].ambiguous_resends for r in held} == {1}, "each counted once as a possible duplicate"

            a.reconnect()
            # SIGTERM lets a worker finish what it has in flight: once host-a has exited, whatever it was going
            # to do with the batch it held is done.
            codes = stop(cut_off, other)
        finally:
            for worker in (cut_off, other):
                worker.kill()
        after = {r.id: r for r in deliveries(postgres_url)}
        copies = copies_over(seen_by_a, seen_by_b)
        late = seen_by_a.accepted[posted_by_a:]
    assert codes == [0, 0], (tmp_path / "host-a.err").read_text()[-3000:]
    assert {i: r.message_id for i, r in after.items()} == {i: r.message_id for i, r in rows.items()}, "none re-marked"
    assert {r.status for r in after.values()} == {DeliveryStatus.sent.value}
    if late or set(copies.values()) != {1}:
        recipients = sum(len(body["personalizations"]) for body in late)
        raise SentAgainAfterComeback(
            f"host-a, back on the network, posted {len(late)} request(s) of {recipients} recipients after host-b had "
            f"taken its leases over and sent them: {sum(n - 1 for n in copies.values())} readers got a second copy")


def posted_ids(server: FakeSendGrid) -> set[int]:
    return {int(p["custom_args"]["delivery_id"]) for body in server.accepted for p in body["personalizations"]}


def post_times(server: FakeSendGrid) -> dict[int, float]:
    """delivery id → when ``server`` received the request that carried it (each request was accepted: one host
    posts to it, one request at a time)."""
    assert len(server.request_times) == len(server.accepted)
    return {int(p["custom_args"]["delivery_id"]): at for at, body in zip(server.request_times, server.accepted)
            for p in body["personalizations"]}
