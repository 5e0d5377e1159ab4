"""What the benchmarks share: fast seeding, a throwaway database, the SendGrid server in its own process.

Seeding goes straight to SQL (INSERT … SELECT over a generated series), not through the CSV importer: a
million subscribers in seconds, so the benchmark measures the send, not the setup.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import socket
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import bindparam, create_engine, text
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from storage.migrate import upgrade  # noqa: E402
from storage.types import UTCDateTime  # noqa: E402

POSTGRES_ADMIN_URL = os.environ.get("DIGEST_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
API_KEY = "SG.bench-key"
SECRET_KEY = "bench-secret-key-0123456789abcdef"
CATEGORIES = ["Developer Tools", "Writing", "Data", "Design", "Security", "Video", "Audio", "Research"]
NOW = datetime.now(timezone.utc).replace(microsecond=0)


def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {load()}")


def load() -> str:
    """The load average, and a warning when others are using the cores: a same-run ratio survives a busy box
    only partly (the floor and the pipeline both wait for CPU, the SendGrid-like server's included, which
    narrows the ratio), so a figure taken on one says so."""
    one_minute = os.getloadavg()[0]
    busy = one_minute > (os.cpu_count() or 1) * 0.75
    return f"load average {one_minute:.2f}" + (" (a busy box: ratios read narrower than on a quiet one)" if busy else "")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def verdict(value: float, target: float, *, lower_is_better: bool = True) -> str:
    ok = value <= target if lower_is_better else value >= target
    return "ok" if ok else "MISSED"


# -- databases -------------------------------------------------------------------------------------------

@contextmanager
def database(kind: str, workdir: Path):
    """A fresh migrated database of ``kind`` (sqlite or postgres), dropped afterwards."""
    if kind == "sqlite":
        path = workdir / f"bench-{uuid.uuid4().hex[:8]}.db"
        url = f"sqlite:///{path}"
        upgrade(url)
        try:
            yield url
        finally:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    name = f"digest_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def category_sets() -> list[str]:
    """What subscribers follow: every category alone, neighbouring pairs, and "" (all) for one in ten."""
    keys = [c.casefold() for c in CATEGORIES]
    singles = keys
    pairs = [";".join(sorted((keys[i], keys[(i + 1) % len(keys)]))) for i in range(len(keys))]
    return [""] + singles + pairs  # 17 sets


def seed_subscribers(engine, count: int) -> None:
    """``count`` active subscribers spread over the category sets, in one INSERT … SELECT."""
    sets = category_sets()
    with engine.begin() as connection:
        connection.execute(text("CREATE TEMPORARY TABLE bench_sets (n INTEGER PRIMARY KEY, categories TEXT)"))
        connection.execute(text("INSERT INTO bench_sets (n, categories) VALUES (:n, :c)"),
                           [{"n": n, "c": c} for n, c in enumerate(sets)])
        if engine.dialect.name == "sqlite":
            series = "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < :count) "
            source = "seq"
        else:
            series = ""
            source = "generate_series(1, :count) AS seq(n)"
        connection.execute(text(
            series +
            "INSERT INTO subscriber (email, email_key, name, status, categories, created_at, updated_at, confirmed_at) "
            "SELECT 'reader' || n || '@example.com', 'reader' || n || '@example.com', 'Reader ' || n, 'active', "
            f"(SELECT categories FROM bench_sets b WHERE b.n = seq.n % {len(sets)}), :now, :now, :now FROM {source}"
        ).bindparams(bindparam("now", type_=UTCDateTime())), {"count": count, "now": NOW})
        connection.execute(text("DROP TABLE bench_sets"))
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("ANALYZE"))


def seed_comparisons(engine, count: int, *, published_at: datetime, reviews: bool = True) -> None:
    """``count`` published comparisons over the eight categories, two tools each with four reviews."""
    sets = len(CATEGORIES)
    dialect = engine.dialect.name
    with engine.begin() as connection:
        if dialect == "sqlite":
            series = "WITH RECURSIVE seq(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM seq WHERE n < :count) "
            source = "seq"
        else:
            series, source = "", "generate_series(1, :count) AS seq(n)"
        cases = " ".join(f"WHEN {i} THEN '{c}'" for i, c in enumerate(CATEGORIES))
        connection.execute(text(
            series + "INSERT INTO comparison (slug, title, url, category, published_at, community_votes, created_at, updated_at) "
            "SELECT 'tool-' || n || 'a-vs-tool-' || n || 'b', 'Tool ' || n || 'A vs Tool ' || n || 'B', "
            "'https://verdicts.example.com/compare/tool-' || n, "
            f"CASE n % {sets} {cases} END, :published, n % 97, :published, :published FROM {source}"
        ).bindparams(bindparam("published", type_=UTCDateTime())), {"count": count, "published": published_at})
        connection.execute(text(
            "INSERT INTO tool (comparison_id, position, name, tagline, summary, category, pricing, entry_price, panel_ship_pct) "
            "SELECT c.id, p.position, 'Tool ' || c.id || p.letter, 'A tagline for a tool that does things', "
            "'What it does, in a sentence or two.', c.category, 'Freemium', '$10/mo', 40 + (c.id * 7 + p.position * 13) % 60 "
            "FROM comparison c CROSS JOIN (SELECT 0 AS position, 'A' AS letter UNION ALL SELECT 1, 'B') p"
        ))
        if reviews:
            personas = " UNION ALL ".join(f"SELECT {i} AS position, '{p}' AS persona" for i, p in
                                          enumerate(("Builder", "Skeptic", "Futurist", "Founder")))
            connection.execute(text(
                "INSERT INTO review (tool_id, position, persona, score, verdict, text) "
                "SELECT t.id, r.position, r.persona, 50 + (t.id + r.position * 11) % 50, "
                "CASE WHEN (t.id + r.position) % 3 = 0 THEN 'skip' ELSE 'ship' END, "
                "r.persona || ' thinks it is worth a look: fast to set up, honest pricing, a few rough edges.' "
                f"FROM tool t CROSS JOIN ({personas}) r"
            ))


# -- the SendGrid-compatible server, in its own process -------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def sendgrid_server():
    """`tests/sendgrid_server.py --fast` in a child process: JSON parsed, limits checked, schema skipped."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "tests.sendgrid_server", "--fast", "--port", str(port),
                                "--api-key", API_KEY], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert "listening" in process.stdout.readline()
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def run_child(args: list[str], timeout: float) -> dict:
    """Run ``python benchmarks/<script> --child …`` and return the JSON it prints last."""
    done = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
