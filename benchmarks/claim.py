"""Claim and select, SQLite: with 100,000 comparisons and 1,000,000 subscribers in the store, creating the
issue and its deliveries ≤ 10 s; picking the week's comparisons ≤ 50 ms.

    python benchmarks/claim.py --comparisons 100000 --subscribers 1000000

The store looks like a site after years of issues: every comparison but this week's ten already belongs to
a past issue. Baseline, same run, same database: one bare INSERT … SELECT of a delivery row per active
subscriber (no segments, no categories), the floor under the fan-out; and a bare indexed SELECT of the
ten newest comparisons, the floor under picking.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import NOW, database, machine, seed_comparisons, seed_subscribers, verdict  # noqa: E402

TARGET_OPEN_S = 10.0
TARGET_PICK_MS = 50.0
NEW = 10


def main() -> int:
    from sqlalchemy import bindparam, text

    from digest.claim.opening import open_issue
    from storage.comparisons import claimable_comparisons
    from storage.db import make_engine, session_scope
    from storage.types import UTCDateTime

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--comparisons", type=int, default=100_000)
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"claim and select: {args.comparisons:,} comparisons ({NEW} new), {args.subscribers:,} subscribers, {args.db}")
    with TemporaryDirectory() as tmp, database(args.db, Path(tmp)) as url:
        engine = make_engine(url)
        started = time.perf_counter()
        seed_comparisons(engine, args.comparisons, published_at=NOW - timedelta(days=30), reviews=False)
        seed_subscribers(engine, args.subscribers)
        with engine.begin() as connection:  # years of issues: all but the newest ten are claimed
            connection.execute(text("INSERT INTO issue (week, created_at) VALUES ('2025-W01', :now)")
                               .bindparams(bindparam("now", type_=UTCDateTime())), {"now": NOW})
            connection.execute(text(
                "INSERT INTO issue_comparison (issue_id, comparison_id, rank) "
                "SELECT 1, id, 0 FROM comparison WHERE id <= :old"), {"old": args.comparisons - NEW})
            connection.execute(text("UPDATE comparison SET claimed = true WHERE id <= :old"),  # as a claim does
                               {"old": args.comparisons - NEW})
            connection.execute(text("UPDATE comparison SET published_at = :recent WHERE id > :old")
                               .bindparams(bindparam("recent", type_=UTCDateTime())),
                               {"recent": NOW - timedelta(days=1), "old": args.comparisons - NEW})
        if engine.dialect.name == "sqlite":
            with engine.connect() as connection:
                connection.exec_driver_sql("ANALYZE")
        print(f"  seeded in {time.perf_counter() - started:.1f} s")

        picks, floors = [], []
        for _ in range(20):
            with session_scope(engine) as session:
                began = time.perf_counter()
                picked = claimable_comparisons(session=session, now=NOW)
                picks.append((time.perf_counter() - began) * 1000)
                began = time.perf_counter()
                session.execute(text("SELECT id, category, published_at FROM comparison ORDER BY published_at DESC "
                                     "LIMIT 10")).all()
                floors.append((time.perf_counter() - began) * 1000)
        assert len(picked) == NEW, f"picked {len(picked)}"
        pick, floor_pick = statistics.median(picks), statistics.median(floors)

        with engine.begin() as connection:  # the floor: a bare fan-out, then undone (untimed)
            connection.execute(text("INSERT INTO issue (week, created_at) VALUES ('2025-W02', :now)")
                               .bindparams(bindparam("now", type_=UTCDateTime())), {"now": NOW})
            connection.execute(text("INSERT INTO segment (issue_id, key, comparison_ids, audience, size) "
                                    "VALUES (2, 'floor', '', '', 0)"))
        began = time.perf_counter()
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO delivery (issue_id, subscriber_id, segment_id, status, attempts, ambiguous_resends, created_at) "
                "SELECT 2, id, 1, 'pending', 0, 0, :now FROM subscriber WHERE status = 'active'"
            ).bindparams(bindparam("now", type_=UTCDateTime())), {"now": NOW})
        floor_open = time.perf_counter() - began
        with engine.begin() as connection:
            connection.execute(text("DELETE FROM delivery"))
            connection.execute(text("DELETE FROM segment"))
            connection.execute(text("DELETE FROM issue WHERE id = 2"))

        began = time.perf_counter()
        opened = open_issue(engine=engine, week="2026-W01", now=NOW)
        seconds = time.perf_counter() - began
        engine.dispose()

    open_mark, pick_mark = verdict(seconds, TARGET_OPEN_S), verdict(pick, TARGET_PICK_MS)
    print(f"  open the issue (claim {opened.claimed}, rank, plan, fan out {opened.deliveries:,} deliveries): "
          f"{seconds:.2f} s (target ≤ {TARGET_OPEN_S:.0f} s) {open_mark}")
    print(f"  pick the week's comparisons: median {pick:.1f} ms of 20 (target ≤ {TARGET_PICK_MS:.0f} ms) {pick_mark}")
    print(f"  baseline: bare INSERT … SELECT of {args.subscribers:,} deliveries {floor_open:.2f} s; "
          f"bare SELECT of the 10 newest {floor_pick:.1f} ms")
    missed = "MISSED" in (open_mark, pick_mark)
    print("result: " + ("MISSED a target" if missed else "all targets met"))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
