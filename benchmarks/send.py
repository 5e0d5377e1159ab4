"""Weekly send against the floor: what any sender must do, and our pipeline doing it.

    python benchmarks/send.py --subscribers 1000000 --db sqlite --rss-check 200000
    python benchmarks/send.py --subscribers 1000000 --db postgres --workers 1 --workers 2

The floor is ../shared/benchmarks/floor_send.py (--floor to point elsewhere): per recipient an HMAC-SHA256
token from the standard library, 1000-personalization payloads around one rendered body, POSTed with the
official `sendgrid` client; no database, no rendering. It runs against the same server (its own process,
schema check off) before and after the pipeline, and the mean of its own figures is the reference (these
machines drift). The pipeline:
- SQLite: the whole `digest send --week W` command, from start to exit (start, open the issue, send);
- PostgreSQL: the issue opened, then N `digest worker --once` processes side by side (open + send).
Targets (issue 20): SQLite ≤ 1.35× the floor at 1,000,000 and ≤ 1.5× at 200,000; PostgreSQL with one worker
≤ 1.6×; two workers at least 25 % faster than one; peak RSS ≤ 120 MB and flat in list size. Every stage runs in
its own process, so each peak RSS is that stage's own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from tempfile import TemporaryDirectory

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    API_KEY, NOW, REPO, SECRET_KEY, database, load, machine, peak_rss_mb, run_child, seed_comparisons,
    seed_subscribers, sendgrid_server, verdict,
)

WEEK = "2026-W01"
BASE_URL = "https://news.example.com"
FLOOR = REPO.parent / "shared" / "benchmarks" / "floor_send.py"


def target_sqlite(count: int) -> float:
    return 1.35 if count >= 1_000_000 else 1.5


TARGET_POSTGRES = 1.6
TARGET_TWO_WORKERS = 0.75  # two workers take at most 75 % of one worker's time
TARGET_RSS_MB = 120.0
RSS_FLAT_MB = 10.0  # "flat": the larger list may cost at most this much more memory
CHILD_TIMEOUT = 900.0


def settings_for(url: str, server: str, batch_size: int = 1000):
    from digest.config import Settings

    return Settings(database_url=url, secret_key=SECRET_KEY, transport="sendgrid", SENDGRID_API_KEY=API_KEY,
                    sendgrid_host=server, base_url=BASE_URL, batch_size=batch_size, sendgrid_timeout=60)


# -- children (each stage in its own process) ------------------------------------------------------------

def child_open(url: str, server: str, email_file: str) -> dict:
    """Claim and fan out; then (untimed) write one rendered segment for the baseline to send."""
    from sqlalchemy import select

    from digest.claim.opening import open_issue
    from digest.render.mail import render_segment
    from digest.services import build_services
    from storage.db import session_scope
    from storage.models import Segment

    services = build_services(settings_for(url, server))
    started = time.perf_counter()
    opened = open_issue(engine=services.engine, week=WEEK, now=NOW)
    seconds = time.perf_counter() - started
    with session_scope(services.engine) as session:
        segments = session.execute(select(Segment).where(Segment.issue_id == opened.issue.id)).scalars().all()
        biggest = max(segments, key=lambda s: len(s.comparison_ids))
        email = render_segment(session=session, renderer=services.renderer, settings=services.settings,
                               week=opened.issue.week, opened_at=opened.issue.created_at,
                               comparison_ids=[int(i) for i in biggest.comparison_ids.split(",") if i],
                               audience=biggest.audience)
    Path(email_file).write_text(json.dumps({"subject": email.subject, "html": email.html, "text": email.text,
                                            "segment": biggest.id}))
    return {"seconds": seconds, "deliveries": opened.deliveries, "segments": len(segments),
            "rss_mb": peak_rss_mb()}


def child_drain(url: str, server: str, profile: str | None) -> dict:
    """One `digest worker --once`: send what there is, then exit."""
    from digest.progress import LogProgress
    from digest.send.loop import Sender
    from digest.send.worker import Worker
    from digest.services import build_services, settle_heap

    # Its progress, as `digest worker` off a terminal reports it: a line on stderr every 5 s (kept by run_child).
    progress = LogProgress(write=lambda line: print(line, file=sys.stderr, flush=True))
    services = build_services(settings_for(url, server))
    worker = Worker(services=services, sender=Sender(services=services, progress=progress), idle_seconds=0.05)
    settle_heap()  # as `digest worker` does
    started = time.time()
    if profile:
        import cProfile

        cProfile.runctx("worker.run(once=True)", globals(), {"worker": worker}, profile)
    else:
        worker.run(once=True)
    report = worker.report
    return {"start": started, "end": time.time(), "sent": report.sent, "batches": report.batches,
            "failed": report.failed, "rss_mb": peak_rss_mb()}


def floor(floor_script: Path, server: str, count: int, email_file: str) -> dict:
    """The floor script, in its own process: the seconds it prints, its wall time and its peak RSS."""
    email = json.loads(Path(email_file).read_text())
    html, text = Path(email_file).with_suffix(".html"), Path(email_file).with_suffix(".txt")
    html.write_text(email["html"], encoding="utf-8")
    text.write_text(email["text"], encoding="utf-8")
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, str(floor_script), "--host", server, "--n", str(count),
                                "--html", str(html), "--text", str(text), "--key", API_KEY],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err, rss, cpu = _wait(process)
    if process.returncode != 0:
        raise RuntimeError(f"the floor failed:\n{err[-4000:]}")
    return {"seconds": float(out.strip().splitlines()[-1]), "wall": time.perf_counter() - started, "rss_mb": rss,
            "cpu": cpu}


def _wait(process: subprocess.Popen) -> tuple[str, str, float, float]:
    """``process``'s output, its own peak RSS in MB and the CPU seconds it used (wait4: this child's, not every
    child's). CPU time moves less than wall time when other work shares the machine: a second reading."""
    import os
    import threading

    chunks = {"out": [], "err": []}
    readers = [threading.Thread(target=lambda name=name, stream=stream: chunks[name].append(stream.read()))
               for name, stream in (("out", process.stdout), ("err", process.stderr))]
    for reader in readers:
        reader.start()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    for reader in readers:
        reader.join()
    return "".join(chunks["out"]), "".join(chunks["err"]), usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def digest_send(url: str, server: str) -> dict:
    """The whole `digest send --week W` command, as an operator runs it: start, open the issue, send, exit."""
    import os

    env = {**os.environ, "DIGEST_DATABASE_URL": url, "DIGEST_SECRET_KEY": SECRET_KEY, "DIGEST_TRANSPORT": "sendgrid",
           "SENDGRID_API_KEY": API_KEY, "DIGEST_SENDGRID_HOST": server, "DIGEST_BASE_URL": BASE_URL,
           "DIGEST_SENDGRID_TIMEOUT": "60"}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "digest", "send", "--week", WEEK], cwd=REPO, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err, rss, cpu = _wait(process)
    seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise RuntimeError(f"digest send failed:\n{out[-2000:]}\n{err[-4000:]}")
    sent = [int(n) for n in __import__("re").findall(r"this run sent (\d+)", out)]
    return {"total": seconds, "open": 0.0, "drain": seconds, "sent": sum(sent), "rss_mb": rss, "cpu": cpu,
            "requests": int((__import__("re").search(r"in (\d+) batches", out) or [0, 0])[1]),
            "segments": int((__import__("re").search(r"(\d+) segments", out) or [0, 0])[1]), "per_worker": sum(sent)}


# -- the parent: set up, run the stages, compare --------------------------------------------------------

def pipeline(url: str, server: str, workers: int, workdir: Path, profile: str | None = None) -> dict:
    opened = run_child([__file__, "--child", "open", url, server, str(workdir / "opened.json")], CHILD_TIMEOUT)
    drains = [subprocess.Popen([sys.executable, __file__, "--child", "drain", url, server,
                                *(["--profile", f"{profile}.{n}"] if profile else [])],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for n in range(workers)]
    results = []
    for process in drains:
        out, err = process.communicate(timeout=CHILD_TIMEOUT)
        if process.returncode != 0:
            raise RuntimeError(f"drain failed:\n{err[-4000:]}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    drain = max(r["end"] for r in results) - min(r["start"] for r in results)
    sent = sum(r["sent"] for r in results)
    return {"open": opened["seconds"], "drain": drain, "total": opened["seconds"] + drain, "sent": sent,
            "deliveries": opened["deliveries"], "segments": opened["segments"],
            "requests": sum(r["batches"] for r in results), "per_worker": [r["sent"] for r in results],
            "rss_mb": max([opened["rss_mb"], *(r["rss_mb"] for r in results)])}


def rendered_email(server: str, workdir: Path) -> str:
    """The baseline's content: the biggest segment of the same 10 comparisons, from a small throwaway store."""
    from storage.db import make_engine

    with database("sqlite", workdir) as url:
        engine = make_engine(url)
        seed_comparisons(engine, 10, published_at=NOW - timedelta(days=1))
        seed_subscribers(engine, 1000)  # every category set, so the same segments as the full list
        engine.dispose()
        email_file = str(workdir / "email.json")
        run_child([__file__, "--child", "open", url, server, email_file], CHILD_TIMEOUT)
    return email_file


def check_exactly_once(url: str, expected: int) -> None:
    """Every delivery sent, none counted as a possible duplicate (the caller also checks what was posted)."""
    from sqlalchemy import func, select

    from storage.db import make_engine, session_scope
    from storage.models import Delivery

    engine = make_engine(url)
    with session_scope(engine) as session:
        counts = dict(session.execute(select(Delivery.status, func.count()).group_by(Delivery.status)).all())
        twice = session.execute(select(func.coalesce(func.sum(Delivery.ambiguous_resends), 0))).scalar_one()
    engine.dispose()
    if counts != {"sent": expected} or twice:
        raise SystemExit(f"not exactly once: {counts}, {twice} ambiguous re-sends (expected {expected} sent)")


def run_size(kind: str, count: int, workers: int, server: str, workdir: Path, profile: str | None) -> tuple[dict, float]:
    from storage.db import make_engine

    with database(kind, workdir) as url:
        engine = make_engine(url)
        started = time.perf_counter()
        seed_comparisons(engine, 10, published_at=NOW - timedelta(days=1))
        seed_subscribers(engine, count)
        engine.dispose()
        seeded = time.perf_counter() - started
        if kind == "sqlite" and not profile:
            result = digest_send(url, server)
        else:
            result = pipeline(url, server, workers, workdir, profile)
        check_exactly_once(url, count)
        if result["sent"] != count:  # the workers' own count of recipients the server accepted
            raise SystemExit(f"not exactly once: the workers posted {result['sent']:,} recipients for {count:,} deliveries")
    return result, seeded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--workers", type=int, action="append", help="PostgreSQL: worker processes; repeat to compare")
    parser.add_argument("--rss-check", type=int, default=0, metavar="N",
                        help="also run the pipeline with N subscribers and compare peak RSS (flat in list size)")
    parser.add_argument("--profile", metavar="PREFIX", help="cProfile each drain worker to PREFIX.N")
    parser.add_argument("--floor", type=Path, default=FLOOR, help="the floor script (default: %(default)s)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child:
        kind, *params = args.child + rest
        profile = args.profile
        result = {"open": lambda: child_open(*params), "drain": lambda: child_drain(*params, profile)}[kind]()
        print(json.dumps(result))
        return 0

    workers = args.workers or [1]
    if args.db == "sqlite" and workers != [1]:
        parser.error("SQLite serialises writers: --workers applies to PostgreSQL")
    print(f"machine: {machine()}")
    print(f"weekly send: {args.subscribers:,} subscribers, 10 comparisons over 8 categories, {args.db}")
    missed = False
    with TemporaryDirectory() as tmp, sendgrid_server() as server:
        workdir = Path(tmp)
        # The baseline runs before and after the pipeline and the mean is the reference: these machines
        # drift (other tenants), and a reference taken only after would flatter or punish the pipeline.
        email_file = rendered_email(server, workdir)

        def baseline() -> dict:
            return floor(args.floor, server, args.subscribers, email_file)

        before = baseline()
        print(f"  floor before ({args.floor.name}: sign, build, POST): {before['seconds']:.1f} s "
              f"({before['wall']:.1f} s with its start, {before['cpu']:.1f} s of CPU), peak RSS {before['rss_mb']:.0f} MB")
        runs = {}
        for count in workers:
            result, seeded = run_size(args.db, args.subscribers, count, server, workdir, args.profile)
            runs[count] = result
            print(f"  seeded in {seeded:.1f} s; {result['segments']} segments")
            what = "`digest send`, the whole command" if args.db == "sqlite" and not args.profile else \
                f"open {result['open']:.1f} s, send {result['drain']:.1f} s"
            cpu = f", {result['cpu']:.1f} s of CPU" if "cpu" in result else ""
            print(f"  pipeline, {count} worker(s): {result['total']:.1f} s ({what}{cpu}), {result['requests']} requests, "
                  f"sent {result['sent']:,}, peak RSS {result['rss_mb']:.0f} MB")
        after = baseline()
        base = {"seconds": (before["seconds"] + after["seconds"]) / 2, "rss_mb": max(before["rss_mb"], after["rss_mb"])}
        print(f"  floor after: {after['seconds']:.1f} s ({after['cpu']:.1f} s of CPU); reference (mean): "
              f"{base['seconds']:.1f} s")
        target = target_sqlite(args.subscribers) if args.db == "sqlite" else TARGET_POSTGRES
        for count, result in runs.items():
            ratio = result["total"] / base["seconds"]
            mark = verdict(ratio, target) if count == 1 else "-"
            missed |= mark == "MISSED"
            print(f"  ratio, {count} worker(s): {ratio:.2f}× the floor (target ≤ {target}×) {mark}")
            rss = verdict(result["rss_mb"], TARGET_RSS_MB)
            missed |= rss == "MISSED"
            print(f"  peak RSS, {count} worker(s): {result['rss_mb']:.0f} MB (target ≤ {TARGET_RSS_MB:.0f} MB) {rss}")
        if 1 in runs and 2 in runs:
            share = runs[2]["total"] / runs[1]["total"]
            faster = share <= TARGET_TWO_WORKERS
            missed |= not faster
            print(f"  two workers {runs[2]['total']:.1f} s vs one {runs[1]['total']:.1f} s: {1 - share:.0%} faster "
                  f"(target ≥ {1 - TARGET_TWO_WORKERS:.0%}) {'ok' if faster else 'MISSED'}")
        if args.rss_check:
            small, _ = run_size(args.db, args.rss_check, workers[0], server, workdir, None)
            big = runs[workers[0]]["rss_mb"]
            flat = big - small["rss_mb"] <= RSS_FLAT_MB
            missed |= not flat
            print(f"  peak RSS at {args.rss_check:,} subscribers {small['rss_mb']:.0f} MB, at {args.subscribers:,} "
                  f"{big:.0f} MB: {'flat ok' if flat else 'grows MISSED'} (allowed +{RSS_FLAT_MB:.0f} MB)")
    print(f"  at the end: {load()}")
    print("result: " + ("MISSED a target" if missed else "all targets met"))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
