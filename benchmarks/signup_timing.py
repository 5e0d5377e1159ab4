"""Signup timing: can a stranger tell an active subscriber from a bounced (suppressed) address by how long the
server takes, during or right after a signup for it? Target: no better than a coin (50 %, ≤ 60 % allowed).

    python benchmarks/signup_timing.py --rounds 400 [--db postgres]

One `uvicorn --workers 1` serves the app with the SendGrid transport pointed at `tests/sendgrid_server.py`
in its own process, so a confirmation email really goes out over HTTP. The store holds ROUNDS active and
ROUNDS bounced subscribers. Each round picks one kind at random, signs up a fresh address of that kind
(JSON, a keep-alive connection), then at once asks for a cheap page on the same connection and on a new one.
Measured per round: the signup itself, the follow-up on the same connection, the follow-up on a new one.
A third kind, an address never seen before, shows whether a stranger can tell known addresses from unknown.

The classifier is the simplest an attacker would use: a threshold on one measurement. It is fitted on the odd
rounds (the threshold and side that sort them best) and scored on the even ones, then the other way round;
the figure is the mean of the two. Each half holds as many rounds of one kind as of the other, so 50 % is a
coin toss.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (API_KEY, NOW, SECRET_KEY, database, free_port, machine,  # noqa: E402
                               sendgrid_server, verdict)

TARGET_ACCURACY = 0.60  # a threshold right 60 % of the time or less: noise, not a signal worth a probe
KINDS = ("active", "bounced", "new")  # "new": an address the store has never seen
# Pairs a stranger would like to tell apart; the is the first (an email goes out, or none).
PAIRS = (("active", "bounced"), ("new", "active"), ("new", "bounced"))
WARM_UP = 21  # rounds before the measured ones
PAUSE = 0.15  # seconds between rounds: whatever one signup started has finished before the next begins


def seed(url: str, rounds: int) -> None:
    from sqlalchemy import bindparam, text

    from storage.db import make_engine
    from storage.types import UTCDateTime

    engine = make_engine(url)
    rows = [{"e": f"{kind}{n}@example.com", "s": kind, "t": NOW} for kind in ("active", "bounced")
            for n in range(rounds)]
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO subscriber (email, email_key, name, status, categories, created_at, "
                                "updated_at, confirmed_at) VALUES (:e, :e, 'Reader', :s, '', :t, :t, :t)")
                           .bindparams(bindparam("t", type_=UTCDateTime())), rows)
    engine.dispose()


def serve(url: str, sendgrid: str, port: int, workdir: Path) -> subprocess.Popen:
    env = {**os.environ, "DIGEST_DATABASE_URL": url, "DIGEST_SECRET_KEY": SECRET_KEY,
           "DIGEST_BASE_URL": f"http://127.0.0.1:{port}", "SENDGRID_API_KEY": API_KEY,
           "DIGEST_SENDGRID_HOST": sendgrid, "DIGEST_TRANSPORT": "sendgrid",
           "DIGEST_SENDGRID_SANDBOX": "true",  # links to 127.0.0.1: a real send refuses them
           "DIGEST_SIGNUP_PER_CLIENT_PER_HOUR": "1000000", "DIGEST_OUTBOX_DIR": str(workdir / "outbox")}
    process = subprocess.Popen([sys.executable, "-m", "uvicorn", "digest.web.main:app", "--host", "127.0.0.1",
                                "--port", str(port), "--workers", "1", "--no-access-log", "--log-level", "warning"],
                               cwd=workdir, env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("uvicorn did not start within 30 s")


def timed(connection: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None,
          headers: dict | None = None) -> tuple[float, int]:
    start = time.perf_counter()
    connection.request(method, path, body=body, headers=headers or {})
    answer = connection.getresponse()
    answer.read()
    return (time.perf_counter() - start) * 1000, answer.status


def measure(port: int, rounds: int, seed_value: int, *, first: int = 0) -> list[dict]:
    """``rounds`` signups of addresses numbered from ``first`` (each address signs up once)."""
    order = [KINDS[n % len(KINDS)] for n in range(rounds)]
    random.Random(seed_value).shuffle(order)
    samples = []
    for n, kind in enumerate(order, start=first):
        body = json.dumps({"email": f"{kind}{n}@example.com"}).encode()
        same = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        fresh = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        fresh.connect()  # opened beforehand: the follow-up times the server, not the TCP handshake
        signup, status = timed(same, "POST", "/subscribe", body, {"Content-Type": "application/json"})
        if status != 202:
            raise RuntimeError(f"round {n}: the signup got {status}, not 202")
        after_same, _ = timed(same, "GET", "/healthz")
        after_new, _ = timed(fresh, "GET", "/healthz")
        same.close()
        fresh.close()
        samples.append({"kind": kind, "signup": signup, "same": after_same, "fresh": after_new})
        time.sleep(PAUSE)
    return samples


def threshold_accuracy(train: list[tuple[float, bool]], test: list[tuple[float, bool]]) -> float:
    """Fit the best threshold (and side) on ``train``; the share of ``test`` it gets right."""
    values = sorted({value for value, _ in train})
    best, best_rule = -1.0, (0.0, True)
    for cut in values:
        for above_is_active in (True, False):
            right = sum((value > cut) == (active if above_is_active else not active) for value, active in train)
            if right > best:
                best, best_rule = right, (cut, above_is_active)
    cut, above_is_active = best_rule
    right = sum((value > cut) == (active if above_is_active else not active) for value, active in test)
    return right / len(test)


def accuracy(samples: list[dict], key: str, pair: tuple[str, str]) -> float:
    points = [(sample[key], sample["kind"] == pair[0]) for sample in samples if sample["kind"] in pair]
    odd, even = _balanced(points[1::2]), _balanced(points[0::2])
    return (threshold_accuracy(odd, even) + threshold_accuracy(even, odd)) / 2


def _balanced(points: list[tuple[float, bool]]) -> list[tuple[float, bool]]:
    """As many of each kind (the first ones): guessing one kind every time then scores exactly 50 %."""
    count = min(sum(kind for _, kind in points), sum(not kind for _, kind in points))
    ours = [p for p in points if p[1]][:count]
    theirs = [p for p in points if not p[1]][:count]
    return ours + theirs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=400)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    print(machine())
    with TemporaryDirectory() as tmp, database(args.db, Path(tmp)) as url, sendgrid_server() as sendgrid:
        seed(url, args.rounds + WARM_UP)
        port = free_port()
        server = serve(url, sendgrid, port, Path(tmp))
        try:
            measure(port, WARM_UP, args.seed + 1, first=args.rounds)  # imports, caches, the mailer's start
            samples = measure(port, args.rounds, args.seed)
        finally:
            server.terminate()
            server.wait(timeout=30)
    missed = False
    print(f"{args.rounds} rounds on {args.db}; milliseconds, median (p90) per kind; threshold classifier accuracy")
    for key, label in (("signup", "the signup itself"), ("same", "follow-up, same connection"),
                       ("fresh", "follow-up, new connection")):
        figures = []
        for kind in KINDS:
            values = sorted(sample[key] for sample in samples if sample["kind"] == kind)
            figures.append(f"{kind} {statistics.median(values):5.2f} ({values[int(len(values) * 0.9)]:5.2f})")
        print(f"  {label}: {'  '.join(figures)}")
        for pair in PAIRS:
            score = accuracy(samples, key, pair)
            mark = verdict(score, TARGET_ACCURACY)
            missed |= mark != "ok"
            print(f"    {pair[0]} vs {pair[1]}: {score:5.1%} right (target ≤ {TARGET_ACCURACY:.0%}) {mark}")
    print(f"result: {'MISSED' if missed else 'ok'}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
