"""Provider faults (issue 6, item 2): `digest send` through the real sendgrid client against a FakeSendGrid
that injects 429s (with X-RateLimit-Reset), 503s, dropped connections and stalls at random (seeded).

Every recipient must end up accepted once — extra copies only for recipients counted as ambiguous (a
stall past our timeout or a connection dropped before the answer) — in bounded time; and a permanent
400 fails its batch with SendGrid's own message after exactly one request.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from storage.models import DeliveryStatus
from tests.sendgrid_server import FakeSendGrid, FaultRates, error_body
from tests.test_reliability_crash import record
from tests.test_send_sendgrid import accepted_addresses, deliveries, digest, env_for, seed


class CountingSendGrid(FakeSendGrid):
    """A FakeSendGrid that also tallies the faults it injected, by kind."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.injected: Counter = Counter()

    def _next_action(self):
        action = super()._next_action()
        if action:
            self.injected[str(action[1]) if action[0] == "status" else action[0]] += 1
        return action


def faulty_send(db_url, tmp_path, *, subscribers: int, batch: int, stall: float, timeout: float, seed_value: int,
                bound_seconds: float, name: str) -> None:
    seed(db_url, subscribers)
    faults = FaultRates(rate_limit=0.10, server_error=0.05, drop=0.02, stall=0.02, stall_seconds=stall)
    started = time.monotonic()
    runs = 0
    with CountingSendGrid(faults=faults, seed=seed_value) as server:
        env = env_for(db_url, server, DIGEST_BATCH_SIZE=str(batch), DIGEST_SENDGRID_TIMEOUT=str(timeout))
        while True:  # an outage longer than DIGEST_MAX_ATTEMPTS stops a run; the next run resumes
            runs += 1
            done = digest("send", env=env, cwd=tmp_path, timeout=bound_seconds)
            if done.returncode == 0 or runs == 3:
                break
        elapsed = time.monotonic() - started
        copies = accepted_addresses(server)
        requests, injected = server.requests, dict(server.injected)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = deliveries(db_url)
    duplicates = sum(n - 1 for n in copies.values())
    counted = sum(r.ambiguous_resends for r in rows)
    losses = subscribers - len(copies) + sum(r.status != DeliveryStatus.sent.value for r in rows)
    batches = -(-subscribers // batch)
    record(name, database=db_url.split(":")[0].split("+")[0], recipients=subscribers, batches=batches,
           requests=requests, faults_injected=sum(injected.values()), faults=injected, runs=runs,
           duplicates=duplicates, counted_ambiguous=counted, losses=losses, seconds=round(elapsed, 1))
    assert requests > batches, "faults were injected"
    assert losses == 0, f"{losses} recipients were never delivered"
    assert duplicates <= counted, f"{duplicates} duplicate copies but only {counted} counted as ambiguous"
    assert runs == 1, f"the send needed {runs} runs"
    assert elapsed < bound_seconds, "bounded time: every request has a timeout"


def test_random_provider_faults_every_recipient_delivered_once(db_url, tmp_path):
    "3,000 recipients, 10% 429 / 5% 503 / 2% drops / 2% 2-s stalls (1-s timeout): all delivered, extra copies counted"
    faulty_send(db_url, tmp_path, subscribers=3000, batch=50, stall=2.0, timeout=1.0, seed_value=61,
                bound_seconds=240, name="provider faults fast")


@pytest.mark.soak
def test_soak_random_provider_faults_twenty_thousand_recipients(db_url, tmp_path):
    "20,000 recipients, 10% 429 / 5% 503 / 2% drops / 2% 5-s stalls (3-s timeout): all delivered, extra copies counted"
    faulty_send(db_url, tmp_path, subscribers=20_000, batch=100, stall=5.0, timeout=3.0, seed_value=62,
                bound_seconds=900, name="provider faults soak")


def test_a_permanent_400_fails_only_its_batch_with_the_providers_message_after_one_request(db_url, tmp_path):
    "the first batch gets a 400 from SendGrid: one request for it, its rows failed with SendGrid's words, the rest sent"
    seed(db_url, 250)
    message = "The from address does not match a verified Sender Identity."
    with FakeSendGrid() as server:
        server.script([("status", 400, {}, error_body((message, "from.email")))])
        done = digest("send", env=env_for(db_url, server, DIGEST_BATCH_SIZE="100"), cwd=tmp_path)
        requests = server.requests
        copies = accepted_addresses(server)
    rows = deliveries(db_url)
    failed = [r for r in rows if r.status == DeliveryStatus.failed.value]
    record("permanent 400", database=db_url.split(":")[0].split("+")[0], recipients=250, requests=requests,
           failed=len(failed), sent=len(copies))
    assert requests == 3, "one request per batch: the refused batch is not retried"
    assert len(failed) == 100 and len(copies) == 150
    assert all(message in (r.error or "") for r in failed)
    assert done.returncode == 1 and message in done.stdout + done.stderr
