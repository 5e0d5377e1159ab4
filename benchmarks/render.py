"""Render: one 10-comparison segment ≤ 5 ms; 200 distinct segments ≤ 1 s (Jinja2 → MJML → HTML + subject + text).

    python benchmarks/render.py

All ten comparisons are shown in full (max_shown=10, the worst case; the default shows 8 and "and 2 more").
Baseline, same run: mjml-python compiling the same MJML alone — the floor under any template work.
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import NOW, SECRET_KEY, database, machine, seed_comparisons, verdict  # noqa: E402

TARGET_ONE_MS = 5.0
TARGET_200_S = 1.0
DISTINCT = 200
PER_SEGMENT = 10
REPEATS = 30


def main() -> int:
    from mjml import mjml2html

    print(f"machine: {machine()}")
    renderer, every = _renderer_and_comparisons()

    def render(offset: int):
        return renderer.render_segment(week="2026-W01", issue_date=date(2026, 1, 1),
                                       comparisons=every[offset:offset + PER_SEGMENT], more_count=0,
                                       audience="all categories")

    first = render(0)  # warm the template cache: a worker renders many segments with one environment
    one = _median_ms(lambda: render(0))
    started = time.perf_counter()
    for offset in range(DISTINCT):
        render(offset)
    many = time.perf_counter() - started
    floor = _median_ms(lambda: mjml2html(first.mjml))

    print(f"render: one segment of {PER_SEGMENT} comparisons, all shown; HTML {len(first.html) / 1024:.0f} KB")
    one_mark, many_mark = verdict(one, TARGET_ONE_MS), verdict(many, TARGET_200_S)
    print(f"  one segment: median {one:.2f} ms of {REPEATS} (target ≤ {TARGET_ONE_MS} ms) {one_mark}")
    print(f"  {DISTINCT} distinct segments: {many:.2f} s (target ≤ {TARGET_200_S} s) {many_mark}")
    print(f"  baseline, mjml2html of the same MJML alone: median {floor:.2f} ms")
    missed = "MISSED" in (one_mark, many_mark)
    print("result: " + ("MISSED a target" if missed else "all targets met"))
    return 1 if missed else 0


def _renderer_and_comparisons():
    """A renderer, and the seeded comparisons as the sender reads them (plain records, the store closed after)."""
    from digest.config import Settings
    from digest.render.email import Renderer
    from digest.services import links_for
    from storage.comparisons import load_comparisons
    from storage.db import make_engine, session_scope

    with TemporaryDirectory() as tmp, database("sqlite", Path(tmp)) as url:
        engine = make_engine(url)
        seed_comparisons(engine, DISTINCT + PER_SEGMENT, published_at=NOW - timedelta(days=1))
        settings = Settings(database_url=url, secret_key=SECRET_KEY, max_shown=PER_SEGMENT, transport="outbox")
        with session_scope(engine) as session:
            every = load_comparisons(session=session, ids=list(range(1, DISTINCT + PER_SEGMENT + 1)))
        engine.dispose()
    return Renderer(settings=settings, links=links_for(settings)), every


def _median_ms(work) -> float:
    """The median of REPEATS runs of ``work``, in milliseconds."""
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


if __name__ == "__main__":
    sys.exit(main())
