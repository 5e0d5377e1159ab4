"""`digest demo`: the whole weekly flow on shipped demo data, in a directory of its own."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path

from rich.console import Console

from digest.app import build_sender
from digest.config import demo_settings
from digest.importing import import_comparisons, import_subscribers
from digest.reporting import print_run
from digest.weekly import iso_week, run, slot, week_monday
from storage.migrate import upgrade
from storage.types import utcnow

# The demo data is written for these two weeks; the demo moves it so that they are the two weeks before
# the current one, whatever day it runs.
DATA_FIRST_WEEK = "2026-W46"


def demo_file(name: str) -> Path:
    return Path(str(resources.files("digest") / "demo_data" / name))


def rebased_comparisons(now: datetime) -> list[dict]:
    items = json.loads(demo_file("comparisons.json").read_text(encoding="utf-8"))
    target = week_monday(iso_week(now)) - timedelta(weeks=2)
    shift = target - week_monday(DATA_FIRST_WEEK)
    for item in items:
        published = datetime.fromisoformat(item["published_at"].replace("Z", "+00:00"))
        item["published_at"] = (published + shift).isoformat()
    return items


def run_demo(*, directory: Path, console: Console, now: datetime | None = None) -> None:
    now = now or utcnow()
    workdir = directory.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in ("demo.db", "demo.db-wal", "demo.db-shm"):
        (workdir / stale).unlink(missing_ok=True)
    for folder in ("outbox", "preview"):
        shutil.rmtree(workdir / folder, ignore_errors=True)
    settings = demo_settings(workdir)
    upgrade(settings.database_url)

    comparisons_file = workdir / "comparisons.json"
    comparisons_file.write_text(json.dumps(rebased_comparisons(now), indent=2, ensure_ascii=False), encoding="utf-8")
    sender = build_sender(settings)
    imported = import_comparisons(engine=sender.engine, path=comparisons_file, now=now)
    people = import_subscribers(engine=sender.engine, path=demo_file("subscribers.csv"), now=now)
    console.print(f"[bold]Weekly AI Tool Verdicts demo[/] in {workdir}")
    console.print(f"imported {imported.created} comparisons published over the two weeks before this one, "
                  f"and {people.created} subscribers")

    last_week = iso_week((now - timedelta(weeks=1)).astimezone(settings.tz))
    last_slot = slot(last_week, schedule=settings.send_schedule, tz=settings.tz)
    console.print(f"\n[bold]1. The scheduler wakes at last week's slot ({last_slot:%a %d %b %H:%M %Z}).[/] "
                  "It missed the week before, so that week's verdicts roll into this issue.")
    first = run(sender=sender, now=last_slot)
    print_run(console, first, first.reports)

    this_week = iso_week(now.astimezone(settings.tz))
    console.print(f"\n[bold]2. An editor sends this week's issue ({this_week}) now.[/] "
                  "It claims only what was published since the last issue.")
    second = run(sender=sender, now=now, week=this_week)
    print_run(console, second, second.reports)

    previews = write_previews(sender=sender, workdir=workdir, now=now, weeks=[last_week, this_week])
    index = write_index(workdir / "preview", previews)
    emails = sorted((workdir / "outbox").glob("*.eml"))
    console.print(f"\n[bold]Where to look[/]\n  outbox: {workdir / 'outbox'} ({len(emails)} .eml files, "
                  "one per recipient and issue)")
    console.print(f"  open in a browser: {previews[0][2].as_uri()} (this week, all categories)", highlight=False)
    console.print(f"  every segment of both issues: {index.as_uri()}", highlight=False)


def write_index(folder: Path, previews: list[tuple[str, str, Path]]) -> Path:
    """A page linking every preview, so the demo names one file instead of twenty."""
    from html import escape

    items = "\n".join(f'<li><a href="{escape(path.name)}">{escape(week)}: {escape(audience)}</a></li>'
                      for week, audience, path in previews)
    index = folder / "index.html"
    index.write_text(
        "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Demo issues</title>"
        "<body style=\"font-family:sans-serif;max-width:40em;margin:2em auto\"><h1>Weekly AI Tool Verdicts: "
        f"demo issues</h1><p>One email per segment, as its first reader gets it.</p><ul>{items}</ul></body></html>",
        encoding="utf-8",
    )
    return index


def write_previews(*, sender, workdir: Path, now: datetime, weeks: list[str]) -> list[tuple[str, str, Path]]:
    """One HTML file per segment of each issue, as its first recipient sees it."""
    from sqlalchemy import select

    from digest.preview import preview
    from storage.db import session_scope
    from storage.models import Delivery, Issue, Segment, Subscriber

    folder = workdir / "preview"
    folder.mkdir(exist_ok=True)
    written = []
    with session_scope(sender.engine) as session:
        rows = session.execute(
            select(Issue.week, Segment.id, Segment.audience)
            .join(Segment, Segment.issue_id == Issue.id)
            .where(Issue.week.in_(weeks))
            .order_by(Issue.week.desc(), Segment.size.desc())
        ).all()
        readers = []
        for week, segment_id, audience in rows:
            email = session.execute(
                select(Subscriber.email).join(Delivery, Delivery.subscriber_id == Subscriber.id)
                .where(Delivery.segment_id == segment_id).order_by(Delivery.id).limit(1)
            ).scalars().first()
            readers.append((week, audience, email))
    for number, (week, audience, email) in enumerate(readers, 1):
        result = preview(sender=sender, week=week, now=now, as_email=email)
        slug = "".join(ch if ch.isalnum() else "-" for ch in audience.lower()).strip("-")[:40]
        path = folder / f"{week}-{number:02d}-{slug}.html"
        path.write_text(result.email.html, encoding="utf-8")
        written.append((week, audience, path))
    return written
