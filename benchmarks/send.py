"""Weekly send: claim, fan out, render, batch, POST to a local SendGrid-compatible server, record deliveries.

    python benchmarks/send.py --subscribers 1000000 --db sqlite --rss-check 100000
    python benchmarks/send.py --subscribers 1000000 --db postgres --workers 1 --workers 2

Baseline, same run, same server (its own process, schema check off): a script that only builds the same
1000-recipient payloads (same signed tokens, substitutions and headers, the same rendered content) and
POSTs them through the same client — no database, no rendering. It runs before and after the pipeline and
the mean of the two is the reference (these machines drift). Targets: SQLite ≤ 1.5× the baseline,
PostgreSQL with one worker ≤ 2.0×, two workers faster than one, peak RSS ≤ 200 MB and flat in list size.
Every stage runs in its own process, so each peak RSS is that stage's own.
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
    API_KEY, NOW, REPO, SECRET_KEY, database, machine, peak_rss_mb, run_child, seed_comparisons,
    seed_subscribers, sendgrid_server, verdict,
)

WEEK = "2026-W01"
BASE_URL = "https://news.example.com"
TARGET_SQLITE = 1.5
TARGET_POSTGRES = 2.0
TARGET_RSS_MB = 200.0
RSS_FLAT_MB = 20.0  # "flat": the larger list may cost at most this much more memory
CHILD_TIMEOUT = 600.0


def settings_for(url: str, server: str, batch_size: int = 1000):
    from digest.config import Settings

    return Settings(database_url=url, secret_key=SECRET_KEY, transport="sendgrid", SENDGRID_API_KEY=API_KEY,
                    sendgrid_host=server, base_url=BASE_URL, batch_size=batch_size, sendgrid_timeout=60)


# -- children (each stage in its own process) ------------------------------------------------------------

def child_open(url: str, server: str, email_file: str) -> dict:
    """Claim and fan out; then (untimed) write one rendered segment for the baseline to send."""
    from digest.claim.opening import open_issue
    from digest.render.mail import render_segment
    from digest.services import build_services
    from storage.db import session_scope
    from storage.issues import issue_segments

    services = build_services(settings_for(url, server))
    started = time.perf_counter()
    opened = open_issue(engine=services.engine, week=WEEK, now=NOW)
    seconds = time.perf_counter() - started
    with session_scope(services.engine) as session:
        segments = issue_segments(session=session, issue_id=opened.issue.id)
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


def child_baseline(server: str, count: int, email_file: str) -> dict:
    """The floor: the same payloads, built and POSTed through the same client; no database, no rendering."""
    from digest.links import NAME_HTML_TAG, NAME_TEXT_TAG, TOKEN_TAG, Links, Signer
    from digest.transports.base import Batch, Recipient
    from digest.transports.sendgrid import SendGridTransport

    email = json.loads(Path(email_file).read_text())
    signer = Signer(SECRET_KEY)
    links = Links(base_url=BASE_URL, signer=signer)
    transport = SendGridTransport(api_key=API_KEY, host=server, timeout=60)
    started = time.perf_counter()
    requests = 0
    for first in range(1, count + 1, 1000):
        recipients = []
        for n in range(first, min(first + 1000, count + 1)):
            token = signer.recipient_token(subscriber_id=n, delivery_id=n, tag=(1 << 48) - n)  # a tag's 15 digits
            name = f"Reader {n}"
            recipients.append(Recipient(
                delivery_id=n, email=f"reader{n}@example.com", name=name,
                substitutions={TOKEN_TAG: token, NAME_HTML_TAG: name, NAME_TEXT_TAG: name},
                headers={"List-Unsubscribe": f"<{links.unsubscribe(token)}>",
                         "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}))
        transport.send(Batch(
            from_email="verdicts@example.com", from_name="Weekly AI Tool Verdicts", subject=email["subject"],
            html=email["html"], text=email["text"], recipients=recipients,
            headers={"List-Id": "Weekly AI Tool Verdicts <weekly.example.com>"},
            categories=["weekly-digest", WEEK], custom_args={"issue": WEEK, "segment": str(email["segment"])}))
        requests += 1
    return {"seconds": time.perf_counter() - started, "requests": requests, "rss_mb": peak_rss_mb()}


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
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child:
        kind, *params = args.child + rest
        profile = args.profile
        result = {"open": lambda: child_open(*params), "drain": lambda: child_drain(*params, profile),
                  "baseline": lambda: child_baseline(params[0], int(params[1]), params[2])}[kind]()
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
            return run_child([__file__, "--child", "baseline", server, str(args.subscribers), email_file], CHILD_TIMEOUT)

        before = baseline()
        print(f"  baseline before (build + POST only): {before['seconds']:.1f} s, {before['requests']} requests, "
              f"peak RSS {before['rss_mb']:.0f} MB")
        runs = {}
        for count in workers:
            result, seeded = run_size(args.db, args.subscribers, count, server, workdir, args.profile)
            runs[count] = result
            print(f"  seeded in {seeded:.1f} s; {result['segments']} segments")
            print(f"  pipeline, {count} worker(s): {result['total']:.1f} s (open {result['open']:.1f} s, send "
                  f"{result['drain']:.1f} s), {result['requests']} requests, sent {result['sent']:,} "
                  f"{result['per_worker']}, peak RSS {result['rss_mb']:.0f} MB")
        after = baseline()
        base = {"seconds": (before["seconds"] + after["seconds"]) / 2, "rss_mb": max(before["rss_mb"], after["rss_mb"])}
        print(f"  baseline after: {after['seconds']:.1f} s; reference (mean): {base['seconds']:.1f} s")
        target = TARGET_SQLITE if args.db == "sqlite" else TARGET_POSTGRES
        for count, result in runs.items():
            ratio = result["total"] / base["seconds"]
            mark = verdict(ratio, target) if count == 1 else "-"
            missed |= mark == "MISSED"
            print(f"  ratio, {count} worker(s): {ratio:.2f}× the baseline (target ≤ {target}×) {mark}")
            rss = verdict(result["rss_mb"], TARGET_RSS_MB)
            missed |= rss == "MISSED"
            print(f"  peak RSS, {count} worker(s): {result['rss_mb']:.0f} MB (target ≤ {TARGET_RSS_MB:.0f} MB) {rss}")
        if 1 in runs and 2 in runs:
            faster = runs[2]["total"] < runs[1]["total"]
            missed |= not faster
            print(f"  two workers {runs[2]['total']:.1f} s vs one {runs[1]['total']:.1f} s: "
                  f"{'faster ok' if faster else 'not faster MISSED'}")
        if args.rss_check:
            small, _ = run_size(args.db, args.rss_check, workers[0], server, workdir, None)
            big = runs[workers[0]]["rss_mb"]
            flat = big - small["rss_mb"] <= RSS_FLAT_MB
            missed |= not flat
            print(f"  peak RSS at {args.rss_check:,} subscribers {small['rss_mb']:.0f} MB, at {args.subscribers:,} "
                  f"{big:.0f} MB: {'flat ok' if flat else 'grows MISSED'} (allowed +{RSS_FLAT_MB:.0f} MB)")
    print("result: " + ("MISSED a target" if missed else "all targets met"))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
