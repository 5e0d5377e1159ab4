"""Crash and resume (issue 6, item 1): `digest send` killed with SIGKILL at random points, then rerun.

Kills land in three places, chosen per trial and recorded:
- "start/fan-out": before the first request reaches SendGrid (opening the issue, fan-out, rendering);
- "after accept": the instant SendGrid recorded a batch and before it answered, so before our commit —
  the documented ambiguous case (docs/sending.md);
- "mid-run": at a random moment while batches are going out.
At the end every subscriber must have been sent once: duplicates (copies beyond one per address in what
the server accepted) are allowed only up to the recipients counted in `delivery.ambiguous_resends`, and
losses (subscribers never accepted, or rows not `sent`) must be zero.

Figures are printed and, when DIGEST_RELIABILITY_FIGURES names a file, appended to it as JSON lines
(docs/reliability.md is written from them).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from storage.models import DeliveryStatus
from tests.sendgrid_server import FakeSendGrid
from tests.test_send_sendgrid import accepted_addresses, deliveries, digest, env_for, seed


def record(test: str, **figures) -> None:
    """Print the figures of a reliability run and append them to $DIGEST_RELIABILITY_FIGURES if set."""
    line = json.dumps({"test": test, **figures}, sort_keys=True)
    print(f"FIGURES {line}")
    target = os.environ.get("DIGEST_RELIABILITY_FIGURES")
    if target:
        with open(target, "a", encoding="utf-8") as out:
            out.write(line + "\n")


def _kill_one(env, cwd, server: FakeSendGrid, rng: random.Random, point: str) -> str | None:
    """Start `digest send`, kill it at POINT; return where the kill landed (None: the run ended first)."""
    process = subprocess.Popen([sys.executable, "-m", "digest.cli", "send"], env=env, cwd=cwd,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    requests_before, accepted_before = server.requests, len(server.accepted)
    deadline = time.monotonic() + 60
    if point == "start/fan-out":
        time.sleep(rng.uniform(0.1, 0.5))  # the first POST leaves ~0.5 s after the start: start-up, fan-out, render
    elif point == "after accept":
        target = accepted_before + rng.randint(1, 6)
        while len(server.accepted) < target and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)  # the server holds its answer latency/2 after recording: the kill lands in it
    else:  # mid-run: a random moment once requests are flowing
        while server.requests == requests_before and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.8))
    if process.poll() is not None:
        return None
    landed = point
    if point == "start/fan-out" and server.requests > requests_before:
        landed = "mid-run"
    process.send_signal(signal.SIGKILL)
    process.wait()
    return landed


def crash_and_resume(db_url: str, tmp_path, *, subscribers: int, kills: int, seed_value: int, name: str) -> None:
    seed(db_url, subscribers)
    rng = random.Random(seed_value)
    points = ["start/fan-out", "after accept", "mid-run"]
    landed: Counter = Counter()
    started = time.monotonic()
    # 100 per request and 60 ms each: a run takes several seconds, so every kill lands inside one.
    with FakeSendGrid(latency=0.06) as server:
        env = env_for(db_url, server, DIGEST_BATCH_SIZE="100")
        trials = 0
        while sum(landed.values()) < kills and trials < kills * 3:
            trials += 1
            where = _kill_one(env, tmp_path, server, rng, points[trials - 1] if trials <= 3 else rng.choice(points))
            if where is None:
                break  # the run finished before the kill: nothing left to interrupt
            landed[where] += 1
        final = digest("send", env=env, cwd=tmp_path, timeout=300)
        assert final.returncode == 0, final.stdout + final.stderr
        copies = accepted_addresses(server)
        requests = server.requests
    rows = deliveries(db_url)
    duplicates = sum(n - 1 for n in copies.values())
    counted = sum(r.ambiguous_resends for r in rows)
    not_sent = sum(r.status != DeliveryStatus.sent.value for r in rows)
    losses = subscribers - len(copies) + not_sent
    record(name, database=db_url.split(":")[0].split("+")[0], subscribers=subscribers, kills=sum(landed.values()),
           kill_points=dict(landed), requests=requests, duplicates=duplicates, counted_ambiguous=counted,
           losses=losses, seconds=round(time.monotonic() - started, 1))
    assert sum(landed.values()) == kills, f"only {dict(landed)} kills landed inside a run"
    assert len(rows) == subscribers and not_sent == 0, "every delivery ends sent"
    assert losses == 0, f"{losses} subscribers never reached SendGrid"
    assert duplicates <= counted, f"{duplicates} duplicate copies but only {counted} counted as ambiguous"


def test_killed_eight_times_then_rerun_every_subscriber_is_sent_once(db_url, tmp_path):
    "5,000 subscribers, SIGKILL 8 times (fan-out, after SendGrid accepted, mid-run), rerun: no loss, duplicates only counted"
    crash_and_resume(db_url, tmp_path, subscribers=5000, kills=8, seed_value=6001, name="crash-resume fast")


@pytest.mark.soak
def test_soak_killed_twenty_times_then_rerun_every_subscriber_is_sent_once(db_url, tmp_path):
    "50,000 subscribers, SIGKILL 20 times at random points, rerun: no loss, duplicates only counted"
    crash_and_resume(db_url, tmp_path, subscribers=50_000, kills=20, seed_value=6002, name="crash-resume soak")
