"""The web app's writes under `wrk` (32 connections, 1 uvicorn worker): a reader's vote POST and the site's
API PUT of a comparison. Target (issue 20): each ≥ 1,000 requests/s on one worker.

    python benchmarks/web_writes.py --seconds 10 [--db postgres]

Needs `wrk` (apt-get install wrk). The vote POSTs cycle through 1,000 readers of a sent issue, each casting
Ship or Skip on a comparison the issue carried, with a valid CSRF cookie and field (the answer is 303 to the
vote's page); the PUTs cycle through 500 comparisons, each pushed in turn with one of two panels (so every PUT
changes what is stored, as the site's pushes do). Both count only 2xx and 3xx answers.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import hmac
import json
import os
import secrets
import shutil
import sys
from datetime import timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import NOW, REPO, SECRET_KEY, database, free_port, machine, seed_comparisons, \
    seed_subscribers, verdict  # noqa: E402
from benchmarks.tracking import CONNECTIONS, serve, stop, wrk  # noqa: E402

TARGET_RATE = 1000.0
READERS = 1000
PUSHED = 500
API_TOKEN = "bench-api-token-" + "t" * 32
EXAMPLE = REPO / "tests" / "data" / "import" / "example.json"


def seed(url: str) -> list[str]:
    """A sent issue to READERS readers; each reader's vote path on its first comparison's first tool."""
    from sqlalchemy import text

    from digest.claim.opening import open_issue
    from digest.links import Signer
    from storage.db import make_engine

    engine = make_engine(url)
    seed_comparisons(engine, 10, published_at=NOW - timedelta(days=1))
    seed_subscribers(engine, READERS)
    issue = open_issue(engine=engine, week="2026-W01", now=NOW).issue
    with engine.begin() as connection:
        connection.execute(text("UPDATE delivery SET status = 'sent'"))
        slug = connection.execute(text("SELECT c.slug FROM comparison c JOIN issue_comparison ic ON "
                                       "ic.comparison_id = c.id ORDER BY ic.rank LIMIT 1")).scalar_one()
        rows = connection.execute(text("SELECT d.id, s.id, s.link_tag FROM delivery d JOIN subscriber s ON "
                                       "s.id = d.subscriber_id WHERE d.issue_id = :i"), {"i": issue.id}).all()
    engine.dispose()
    signer = Signer(SECRET_KEY)
    return [f"/v/{signer.recipient_token(subscriber_id=s, delivery_id=d, tag=t)}/{slug}/1/ship" for d, s, t in rows]


def vote_script(paths: list[str], where: Path) -> Path:
    cookie = secrets.token_urlsafe(32)
    field = hmac.new(SECRET_KEY.encode(), f"csrf:{cookie}".encode(), hashlib.sha256).hexdigest()
    listed = ",\n".join(f'"{p}"' for p in paths)
    script = where / "votes.lua"
    script.write_text(
        f"local paths = {{\n{listed}\n}}\nlocal i = 0\n"
        'request = function()\n  i = i + 1\n'
        '  local choice = (i % 2 == 0) and "ship" or "skip"\n'
        f'  return wrk.format("POST", paths[(i % #paths) + 1], {{["Content-Type"] = '
        f'"application/x-www-form-urlencoded", ["Cookie"] = "digest_csrf={cookie}"}}, '
        f'"vote=" .. choice .. "&csrf={field}")\nend\n')
    return script


def put_script(where: Path) -> Path:
    """PUSHED comparisons, each with two bodies (panels) that alternate: every PUT is an update."""
    template = json.loads(EXAMPLE.read_text())[0]
    bodies = []
    for n in range(PUSHED):
        for pct in (100, 50):
            body = copy.deepcopy(template)
            body["slug"] = f"pushed-{n}"
            body["url"] = f"https://verdicts.example.com/compare/pushed-{n}"
            body["tools"][0]["panel_ship_pct"] = pct
            bodies.append((f"/api/comparisons/pushed-{n}", json.dumps(body)))
    listed = ",\n".join(f"{{{json.dumps(path)}, {json.dumps(body)}}}" for path, body in bodies)
    script = where / "puts.lua"
    script.write_text(
        f"local bodies = {{\n{listed}\n}}\nlocal i = 0\n"
        'request = function()\n  i = i + 1\n  local b = bodies[(i % #bodies) + 1]\n'
        f'  return wrk.format("PUT", b[1], {{["Content-Type"] = "application/json", '
        f'["Authorization"] = "Bearer {API_TOKEN}"}}, b[2])\nend\n')
    return script


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    print(f"machine: {machine()}")
    print(f"web writes: wrk -t1 -c{CONNECTIONS} -d{args.seconds}s, 1 uvicorn worker, {args.db}")
    missed = False
    with TemporaryDirectory() as tmp, database(args.db, Path(tmp)) as url:
        paths = seed(url)
        env = {**os.environ, "DIGEST_DATABASE_URL": url, "DIGEST_SECRET_KEY": SECRET_KEY, "DIGEST_API_TOKEN": API_TOKEN,
               "DIGEST_TRANSPORT": "outbox", "DIGEST_OUTBOX_DIR": str(Path(tmp) / "outbox"), "PYTHONPATH": str(REPO)}
        for name, script in (("vote POST", vote_script(paths, Path(tmp))), ("API PUT", put_script(Path(tmp)))):
            port = free_port()
            app = serve("digest.web.main:app", port, env)
            try:
                figures = wrk(port, script, args.seconds, app)
            finally:
                stop(app)
            mark = verdict(figures["rate"], TARGET_RATE, lower_is_better=False)
            if figures["non2xx"]:
                mark = "MISSED"
            missed |= mark == "MISSED"
            print(f"  {name}: {figures['rate']:,.0f} req/s, p99 {figures['p99']:.1f} ms, non-2xx/3xx "
                  f"{figures['non2xx']}, socket errors {figures['socket_errors']}, CPU {figures['cpu_us'][0]:.0f} µs "
                  f"a request (target ≥ {TARGET_RATE:,.0f} req/s) {mark}")
    print("result: " + ("MISSED a target" if missed else "all targets met"))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
