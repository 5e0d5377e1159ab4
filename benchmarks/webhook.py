"""SendGrid's Event Webhook under load, tried as SendGrid would: signed posts of 1,000 events, several at a time,
against a real `digest serve` (one worker, then more). Target (issue 21): ≥ 10,000 events/s per web process,
every event recorded once, memory flat in the number of events; two workers faster than one.

    python benchmarks/webhook.py --db sqlite --events 200000 --workers 1 --workers 2

The store holds one sent issue of --deliveries deliveries (100,000). The events follow them in order, as a
send's do: per delivery processed, then delivered (1 in 100 a hard bounce instead), an open for 6 in 10, a
click for 1 in 10, a spam report for 1 in 2,500 and an unsubscribe for 1 in 500 (under the guardrail's
limits, so no pause). Posts are built and signed (ECDSA P-256, as SendGrid signs) before the clock starts;
--clients threads POST them on keep-alive connections, and a post answered 503 is posted again after
Retry-After (SendGrid retries for 24 hours). Printed per run: events/s over the whole stream, the server's
CPU µs per event, its RSS after the first and the last quarter of the stream (flat: within 15 MB), 503s, and
whether every event is stored once. Then the first 20 posts are replayed from two clients at once: nothing
may change.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from tempfile import TemporaryDirectory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import NOW, REPO, SECRET_KEY, database, free_port, machine, seed_subscribers, \
    verdict  # noqa: E402
from benchmarks.tracking import cpu_seconds  # noqa: E402

TARGET_RATE = 10_000.0
POST_EVENTS = 1000  # SendGrid's posts hold up to ~1,000 events (or 768 KB)
RSS_SLACK_MB = 15.0


def seed(url: str, deliveries: int) -> list:
    """One issue, sent to ``deliveries`` subscribers; (delivery id, address) of each."""
    from sqlalchemy import bindparam, text

    from storage.db import make_engine
    from storage.types import UTCDateTime

    engine = make_engine(url)
    seed_subscribers(engine, deliveries)
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO issue (id, week, created_at) VALUES (1, '2026-W01', :t)")
                           .bindparams(bindparam("t", type_=UTCDateTime())), {"t": NOW})
        connection.execute(text("INSERT INTO segment (id, issue_id, key, comparison_ids, audience, size) "
                                "VALUES (1, 1, 'k', '', '', 0)"))
        connection.execute(text("INSERT INTO delivery (issue_id, subscriber_id, segment_id, status, attempts, "
                                "ambiguous_resends, created_at, sent_at, message_id) "
                                "SELECT 1, id, 1, 'sent', 1, 0, :t, :t, 'm' FROM subscriber ORDER BY id")
                           .bindparams(bindparam("t", type_=UTCDateTime())), {"t": NOW})
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("ANALYZE"))
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT d.id, s.email FROM delivery d JOIN subscriber s "
                                       "ON s.id = d.subscriber_id ORDER BY d.id")).all()
    engine.dispose()
    return rows


def event_stream(rows: list, count: int, run: str):
    """``count`` events as SendGrid posts them, for the deliveries in ``rows``, in a send's order."""
    made, at = 0, int(NOW.timestamp())
    for n, (delivery_id, email) in enumerate(rows * (count // len(rows) + 1)):
        base = {"email": email, "timestamp": at + n // 1000, "sg_message_id": f"m{delivery_id}.filter0001",
                "delivery_id": str(delivery_id), "issue": "2026-W01", "category": ["weekly-digest", "2026-W01"]}
        kinds = ["processed", "bounce" if n % 100 == 7 else "delivered"]
        kinds += ["open"] * (n % 10 < 6) + ["click"] * (n % 10 == 3)
        kinds += ["spamreport"] * (n % 2500 == 11) + ["unsubscribe"] * (n % 500 == 13)
        for kind in kinds:
            extra = {"open": {"useragent": "Mozilla/5.0", "sg_machine_open": n % 3 == 0},
                     "click": {"url": "https://verdicts.example.com/compare/x"},
                     "bounce": {"type": "bounce", "status": "5.1.1", "reason": "550 5.1.1 no such user"}}.get(kind, {})
            yield {**base, "event": kind, "sg_event_id": f"{run}-{made}", **extra}
            made += 1
            if made == count:
                return


def signed_posts(rows: list, count: int, run: str) -> tuple[str, list[tuple[bytes, dict]]]:
    """The public key (base64 DER, as SendGrid shows it) and the posts: (body, headers) each."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    public = base64.b64encode(key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    events = list(event_stream(rows, count, run))
    posts = []
    for start in range(0, len(events), POST_EVENTS):
        body = json.dumps(events[start:start + POST_EVENTS])
        timestamp = str(int(time.time()))
        signature = base64.b64encode(key.sign((timestamp + body).encode(), ec.ECDSA(hashes.SHA256()))).decode()
        posts.append((body.encode(), {"X-Twilio-Email-Event-Webhook-Signature": signature,
                                      "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
                                      "Content-Type": "application/json"}))
    return public, posts


def serve(port: int, workers: int, env: dict) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "digest", "serve", "--port", str(port), "--workers", str(workers)],
                               cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", "/o/warmup.gif")
            connection.getresponse().read()
            if len(children(process.pid)) >= (workers if workers > 1 else 0):
                return process
        except OSError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"digest serve did not start: {process.stderr.read()[-2000:]}")


def children(pid: int) -> list[int]:
    return [int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()]


def rss_mb(pid: int) -> float:
    """Resident memory of the server and its worker processes, together."""
    total = 0
    for process in [pid, *children(pid)]:
        try:
            for line in Path(f"/proc/{process}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total / 1024


class Clients:
    """``clients`` threads POSTing ``posts`` in order, each post until it is answered 2xx."""

    def __init__(self, port: int, posts: list, clients: int, on_progress=None):
        self.port, self.posts, self.clients, self.on_progress = port, posts, clients, on_progress
        self.next, self.done, self.busy, self.errors = 0, 0, 0, []
        self.lock = threading.Lock()

    def run(self) -> float:
        started = time.perf_counter()
        threads = [threading.Thread(target=self._client) for _ in range(self.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - started

    def _take(self):
        with self.lock:
            if self.next == len(self.posts) or self.errors:
                return None
            self.next += 1
            return self.posts[self.next - 1]

    def _client(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        while (post := self._take()) is not None:
            while True:
                connection.request("POST", "/webhooks/sendgrid", body=post[0], headers=post[1])
                response = connection.getresponse()
                answer = response.read()
                if response.status == 200:
                    break
                if response.status != 503:
                    self.errors.append(f"{response.status} {answer[:300]!r}")
                    return
                with self.lock:
                    self.busy += 1
                time.sleep(min(float(response.getheader("Retry-After") or 1), 1.0))
            with self.lock:
                self.done += 1
                if self.on_progress:
                    self.on_progress(self.done)
        connection.close()


def stored(url: str) -> tuple[int, int, tuple]:
    """Webhook events stored, distinct provider ids among them, and the issue's guardrail totals."""
    from sqlalchemy import text

    from storage.db import make_engine

    engine = make_engine(url)
    with engine.connect() as connection:
        count, distinct = connection.execute(text(
            "SELECT count(*), count(DISTINCT provider_event_id) FROM event WHERE source = 'webhook' "
            "AND provider_event_id IS NOT NULL")).one()
        totals = tuple(connection.execute(text(
            "SELECT reported_delivered, reported_bounced, reported_dropped, reported_complaints FROM issue")).one())
    engine.dispose()
    return count, distinct, totals


def database_cpu_seconds(url: str) -> float | None:
    """PostgreSQL: CPU seconds of the server processes serving this database's connections (the web
    processes' pooled connections, opened during the run); None on SQLite, which runs inside them."""
    if not url.startswith("postgresql"):
        return None
    from sqlalchemy import text

    from storage.db import make_engine

    engine = make_engine(url)
    with engine.connect() as connection:
        pids = connection.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                                       "AND pid <> pg_backend_pid()")).scalars().all()
    engine.dispose()
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def run_once(args, workers: int, tmp: Path) -> bool:
    with database(args.db, tmp) as url:
        rows = seed(url, args.deliveries)
        public_key, posts = signed_posts(rows, args.events, run=f"w{workers}")
        events = sum(body.count(b'"sg_event_id"') for body, _ in posts)
        env = {**os.environ, "DIGEST_DATABASE_URL": url, "DIGEST_SECRET_KEY": SECRET_KEY,
               "DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY": public_key, "DIGEST_TRANSPORT": "outbox",
               "DIGEST_OUTBOX_DIR": str(tmp / "outbox"), "PYTHONPATH": str(REPO)}
        port = free_port()
        server = serve(port, workers, env)
        rss = {}

        def progress(done: int) -> None:
            if done == len(posts) // 4:
                rss["quarter"] = rss_mb(server.pid)

        try:
            before = sum(cpu_seconds(server.pid))
            clients = Clients(port, posts, args.clients, on_progress=progress)
            wall = clients.run()
            cpu = sum(cpu_seconds(server.pid)) - before
            db_cpu = database_cpu_seconds(url)
            rss["end"] = rss_mb(server.pid)
            count, distinct, totals = stored(url)
            replay = [Clients(port, posts[:20], 2) for _ in range(2)]
            threads = [threading.Thread(target=c.run) for c in replay]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            after_replay = stored(url)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    errors = clients.errors + [e for c in replay for e in c.errors]
    rate = events / wall
    once = count == distinct == events and after_replay == (count, distinct, totals) and not errors
    flat = rss["end"] - rss.get("quarter", rss["end"]) <= RSS_SLACK_MB
    marks = [verdict(rate, TARGET_RATE, lower_is_better=False), "ok" if once else "MISSED", "ok" if flat else "MISSED"]
    print(f"  {workers} worker{'s' * (workers > 1)}: {events:,} events in {len(posts)} posts, {wall:.1f} s: "
          f"{rate:,.0f} events/s (target ≥ {TARGET_RATE:,.0f}) {marks[0]}")
    db = "" if db_cpu is None else f", PostgreSQL's CPU for it {db_cpu / events * 1e6:.0f} µs ({db_cpu:.1f} s)"
    print(f"    server CPU {cpu / events * 1e6:.0f} µs an event ({cpu:.1f} s){db}; 503s answered {clients.busy}; "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"    stored {count:,} events, {distinct:,} distinct ids; guardrail totals (delivered, bounced, dropped, "
          f"spam) {totals}; after replaying 20 posts from two clients at once: "
          f"{'unchanged' if after_replay == (count, distinct, totals) else after_replay} {marks[1]}")
    print(f"    RSS {rss.get('quarter', 0):.0f} MB after a quarter of the posts, {rss['end']:.0f} MB at the end "
          f"(flat: within {RSS_SLACK_MB:.0f} MB) {marks[2]}")
    for error in errors[:3]:
        print(f"    error: {error}")
    run_once.rates[workers] = rate
    return "MISSED" not in marks


run_once.rates = {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--deliveries", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=4, help="posts in flight at once")
    parser.add_argument("--workers", type=int, action="append", help="`digest serve --workers N` (repeatable)")
    args = parser.parse_args()
    workers = args.workers or [1]
    print(f"machine: {machine()}")
    print(f"webhook: {args.db}, {args.deliveries:,} deliveries, {args.events:,} events in posts of {POST_EVENTS}, "
          f"{args.clients} clients")
    ok = True
    with TemporaryDirectory() as tmp:
        for n in workers:
            ok &= run_once(args, n, Path(tmp))
    if 1 in run_once.rates and 2 in run_once.rates:
        faster = run_once.rates[2] > run_once.rates[1]
        ok &= faster
        print(f"  2 workers / 1: {run_once.rates[2] / run_once.rates[1]:.2f}× (target > 1) "
              f"{'ok' if faster else 'MISSED'}")
    print("result: " + ("all targets met" if ok else "MISSED a target"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
