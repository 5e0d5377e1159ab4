"""`digest demo`: the whole weekly flow on shipped demo data, in a directory of its own."""

from __future__ import annotations

import json
import shlex
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path

from rich.console import Console

from digest.send.loop import Sender
from digest.services import Services, build_services
from digest.config import Settings, demo_settings
from digest.demo.readers import a_week_of_reading, apple_prefetch
from digest.importing import import_comparisons, import_subscribers
from digest.render.email import issue_label
from digest.cli.reporting import print_run
from digest.claim.weeks import iso_week, slot, week_monday
from digest.weekly import run
from storage.migrate import upgrade
from storage.types import utcnow

# The demo data is written for these two weeks; the demo moves it so that they are the two weeks before
# the current one, whatever day it runs.
DATA_FIRST_WEEK = "2026-W46"


def demo_file(name: str) -> Path:
    return Path(str(resources.files("digest.demo") / "data" / name))


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
    workdir = fresh_workdir(directory)
    settings = demo_settings(workdir)
    upgrade(settings.database_url)
    last_week = iso_week((now - timedelta(weeks=1)).astimezone(settings.tz))
    last_slot = slot(last_week, schedule=settings.send_schedule, tz=settings.tz)

    comparisons_file = workdir / "comparisons.json"
    comparisons_file.write_text(json.dumps(rebased_comparisons(now), indent=2, ensure_ascii=False), encoding="utf-8")
    # Each send is stamped with the moment it plays (last week's slot, then now), so the readers' opens
    # come after it and the stats see a week of reading, not opens from before the email left.
    services = build_services(settings)
    demo = _Demo(console=console, services=services, sender=Sender(services=services, clock=lambda: last_slot),
                 workdir=workdir, now=now, last_week=last_week, last_slot=last_slot,
                 this_week=iso_week(now.astimezone(settings.tz)))
    demo.import_data(comparisons_file)
    demo.send_last_week()
    demo.send_this_week()
    demo.where_to_look()


def fresh_workdir(directory: Path) -> Path:
    """``directory``, made, without what an earlier demo left there (its database, outbox and previews)."""
    workdir = directory.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for stale in ("demo.db", "demo.db-wal", "demo.db-shm"):
        (workdir / stale).unlink(missing_ok=True)
    for folder in ("outbox", "preview"):
        shutil.rmtree(workdir / folder, ignore_errors=True)
    return workdir


@dataclass
class _Demo:
    """The demo's steps, in the order run_demo plays them, each saying what it shows."""

    console: Console
    services: Services
    sender: Sender
    workdir: Path
    now: datetime
    last_week: str
    last_slot: datetime
    this_week: str

    def import_data(self, comparisons_file: Path) -> None:
        engine, now = self.services.engine, self.now
        imported = import_comparisons(engine=engine, path=comparisons_file, now=now)
        people = import_subscribers(engine=engine, path=demo_file("subscribers.csv"), now=now)
        self.console.print(f"[bold]Weekly AI Tool Verdicts demo[/] in {self.workdir}")
        self.console.print(f"imported {imported.created} comparisons published over the two weeks before this "
                           f"one, and {people.created} subscribers")

    def send_last_week(self) -> None:
        console, services, settings = self.console, self.services, self.services.settings
        console.print(f"\n[bold]1. The scheduler wakes at last week's slot ({self.last_slot:%a %d %b %H:%M %Z}).[/] "
                      "It missed the week before, so that week's verdicts roll into this issue.")
        first = run(services=services, sender=self.sender, now=self.last_slot)
        print_run(console, first, first.reports)

        console.print("\n[bold]2. Its readers, over the days after it went out[/] (simulated, recorded by the web "
                      "app's own tracking): people open and click; Apple Mail Privacy Protection and Gmail's image "
                      "proxy fetch the pixel too, counted apart; one reader unsubscribes.")
        a_week_of_reading(engine=services.engine, settings=settings, week=self.last_week, now=self.now)
        console.print(reading_line(services.engine, self.last_week), highlight=False)

    def send_this_week(self) -> None:
        console, services, this_week, now = self.console, self.services, self.this_week, self.now
        console.print(f"\n[bold]3. An editor sends this week's issue ({this_week}) now.[/] "
                      "It claims only what was published since the last issue; the reader who left gets nothing.")
        self.sender.clock = lambda: now
        second = run(services=services, sender=self.sender, now=now, week=this_week)
        print_run(console, second, second.reports)
        fetched = apple_prefetch(engine=services.engine, settings=services.settings, week=this_week)
        console.print(f"issue {this_week}: {fetched.opens} machine opens within seconds of the send (Apple's proxy "
                      "fetching the images for Apple Mail readers), no human opener yet", highlight=False)

    def where_to_look(self) -> None:
        console, services, settings, workdir = self.console, self.services, self.services.settings, self.workdir
        previews = write_previews(services=services, workdir=workdir, now=self.now,
                                  weeks=[self.last_week, self.this_week])
        dates = {self.last_week: self.last_slot, self.this_week: self.now}
        index = write_index(workdir / "preview", previews, settings=settings,
                            labels={week: issue_label(week, at.astimezone(settings.tz).date()) for week, at in dates.items()})
        chart = write_stats(workdir / "preview", engine=services.engine)
        emails = sorted((workdir / "outbox").glob("*.eml"))
        console.print(f"\n[bold]Where to look[/]\n  outbox: {workdir / 'outbox'} ({len(emails)} .eml files, "
                      "one per recipient and issue)")
        console.print(f"  open in a browser: {previews[0][2].as_uri()} (this week, all categories)", highlight=False)
        console.print(f"  every segment of both issues: {index.as_uri()}", highlight=False)
        console.print(f"  how they did: DIGEST_DATABASE_URL={shlex.quote(settings.database_url)} digest stats "
                      f"(as a chart: {chart.as_uri()})", highlight=False)


def reading_line(engine, week: str) -> str:
    """ "issue 2026-W48: 9 human openers, 8 machine-only, 14 opens in all; 4 clickers; 1 unsubscribe", as
    `digest stats` counts them."""
    from digest.track.stats import issue_stats

    row, = issue_stats(engine=engine, week=week)
    return (f"issue {week}: {row.human_openers} human openers, {row.machine_only_openers} machine-only, "
            f"{row.opens} opens in all; {row.clickers} clickers; {row.unsubscribes} "
            f"{'unsubscribe' if row.unsubscribes == 1 else 'unsubscribes'}")


def write_index(folder: Path, previews: list[tuple[str, str, Path]], *, settings: Settings,
                labels: dict[str, str]) -> Path:
    """A page linking every preview and the stats, so the demo names one file instead of twenty. It is the
    web app's kind of page (templates/web, autoescaped), with the site's stylesheet copied beside it."""
    from digest.render.environment import templates_dir
    from digest.web.pages import web_environment

    issues = [(labels[week], [(audience, path.name) for w, audience, path in previews if w == week])
              for week in dict.fromkeys(week for week, _, _ in previews)]
    html = web_environment().get_template("demo_index.html").render(settings=settings, issues=issues)
    shutil.copyfile(templates_dir() / "web" / "site.css", folder / "site.css")
    index = folder / "index.html"
    index.write_text(html, encoding="utf-8")
    return index


def write_stats(folder: Path, *, engine) -> Path:
    """What `digest stats --html` writes: the chart of the rates over the issues, and the table."""
    from digest.track.stats import issue_stats
    from digest.track.stats_page import stats_page

    path = folder / "stats.html"
    path.write_text(stats_page(issue_stats(engine=engine)), encoding="utf-8")
    return path


def write_previews(*, services: Services, workdir: Path, now: datetime, weeks: list[str]) -> list[tuple[str, str, Path]]:
    """One HTML file per segment of each issue, as its first recipient sees it."""
    from digest.editor.preview import preview
    from storage.db import session_scope
    from storage.demo import first_readers

    folder = workdir / "preview"
    folder.mkdir(exist_ok=True)
    written = []
    with session_scope(services.engine) as session:
        readers = first_readers(session=session, weeks=weeks)
    for number, (week, audience, email) in enumerate(readers, 1):
        result = preview(services=services, week=week, now=now, as_email=email)
        slug = "".join(ch if ch.isalnum() else "-" for ch in audience.lower()).strip("-")[:40]
        path = folder / f"{week}-{number:02d}-{slug}.html"
        path.write_text(result.email.html, encoding="utf-8")
        written.append((week, audience, path))
    return written
