"""Progress of long work (issue 14, item 6): a line every few seconds off a terminal, a bar on one.

The log mode is driven by a fake clock; the sender and the imports report to a recording `Progress`
over real databases; `digest send`, `digest worker` and `digest subscribers import` run as processes
(not a terminal) and show their lines on stderr; the bar renders through rich on a forced terminal.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import timedelta
from io import StringIO

import pytest
from rich.console import Console

from tests.factories import build_sender
from digest.config import Settings
from digest.importing import import_comparisons, import_subscribers
from digest.progress import BarProgress, LogProgress, duration, progress_for
from digest.transports.base import PermanentError
from digest.claim.opening import open_issue
from tests.factories import RecordingTransport, add_comparison, add_subscribers
from tests.sendgrid_server import FakeSendGrid
from tests.test_import_comparisons import another
from tests.test_send_sendgrid import NOW, REPO, digest, env_for, seed

WEEK = "2026-W49"
MONDAY = NOW - timedelta(days=NOW.weekday())


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class RecordingProgress:
    """Remembers every call, in order: ("begin", label, total, unit), ("advance", n), ("end",)."""

    def __init__(self):
        self.calls: list[tuple] = []

    def begin(self, label: str, *, total: int, unit: str) -> None:
        self.calls.append(("begin", label, total, unit))

    def advance(self, count: int) -> None:
        self.calls.append(("advance", count))

    def end(self) -> None:
        self.calls.append(("end",))


# -- the log mode, with a fake clock ------------------------------------------------------------------------

def test_a_log_line_comes_only_once_the_interval_has_passed_and_a_final_line_at_the_end():
    "batches of 1000 a second for 12 s, interval 5 s: lines at 5 s and 10 s, then the final figures"
    clock, lines = FakeClock(), []
    progress = LogProgress(write=lines.append, interval=5.0, clock=clock)
    progress.begin(WEEK, total=20_000, unit="sent")
    for second in range(1, 13):
        clock.now = float(second)
        progress.advance(1000)
        if second == 4:
            assert lines == []
    progress.end()
    assert lines == [
        "2026-W49: 5,000 of 20,000 sent (25 %), 1,000/s, about 15 s left",
        "2026-W49: 10,000 of 20,000 sent (50 %), 1,000/s, about 10 s left",
        "2026-W49: 12,000 of 20,000 sent (60 %), 1,000/s, in 12 s",
    ]


def test_the_line_gives_done_of_total_the_percentage_the_rate_and_the_time_left():
    "120,000 of a million after 14.3 s: 12 %, 8,400/s, about 1 min 45 s left"
    clock, lines = FakeClock(), []
    progress = LogProgress(write=lines.append, interval=5.0, clock=clock)
    progress.begin(WEEK, total=1_000_000, unit="sent")
    clock.now = 120_000 / 8_400
    progress.advance(120_000)
    assert lines == ["2026-W49: 120,000 of 1,000,000 sent (12 %), 8,400/s, about 1 min 45 s left"]
    clock.now = 999_500 / 8_400
    progress.advance(879_500)
    assert lines[-1] == "2026-W49: 999,500 of 1,000,000 sent (99 %), 8,400/s, under a second left"
    clock.now = 3 * 3600 + 5 * 60
    progress.advance(500)
    progress.end()
    assert lines[-1] == "2026-W49: 1,000,000 of 1,000,000 sent (100 %), 90/s, in 3 h 05 min"


def test_durations_read_as_a_person_says_them():
    "3.2 s, 45 s, 1 min 45 s, 2 min, 3 h 05 min"
    assert [duration(s) for s in (3.24, 45.2, 105, 120, 3 * 3600 + 5 * 60 + 10)] == \
        ["3.2 s", "45 s", "1 min 45 s", "2 min", "3 h 05 min"]


def test_a_round_in_which_nothing_was_done_writes_nothing():
    "a worker's pass that found every row leased by another worker leaves no line in its log"
    lines = []
    progress = LogProgress(write=lines.append, interval=0.0, clock=FakeClock())
    progress.begin(WEEK, total=5_000, unit="sent")
    progress.end()
    assert lines == []


# -- the sender and the imports report through the protocol ---------------------------------------------------

@pytest.fixture
def sender(db_url, tmp_path):
    settings = Settings(database_url=db_url, secret_key="k" * 32, base_url="https://news.example.com",
                        outbox_dir=tmp_path / "outbox", transport="outbox", timezone="UTC", batch_size=100)
    sender = build_sender(settings, transport=RecordingTransport(), sleep=lambda s: None)
    yield sender
    sender.services.engine.dispose()


def _opened(sender, subscribers: int):
    add_comparison(sender.services.engine, published_at=MONDAY - timedelta(days=1))
    add_subscribers(sender.services.engine, subscribers)
    return open_issue(engine=sender.services.engine, week=WEEK, now=NOW).issue


def test_a_send_reports_its_total_once_then_each_accepted_batch_and_a_resumed_send_only_what_is_left(sender):
    "250 deliveries in batches of 100, stopped after one: the rerun's total is the 150 still to send"
    issue = _opened(sender, 250)
    first, rest = RecordingProgress(), RecordingProgress()
    sender.progress, sender.should_stop = first, lambda: len(sender.services.transport.batches) >= 1
    sender.send_issue(issue)
    sender.progress, sender.should_stop = rest, lambda: False
    resumed = sender.send_issue(issue)
    # the issue's size, this run's share, and none cancelled
    assert (resumed.recipients, resumed.segments, resumed.sent, resumed.cancelled) == (250, 1, 150, 0)
    sender.progress = unused = RecordingProgress()
    sender.send_issue(issue)  # nothing left: no round at all
    assert first.calls == [("begin", WEEK, 250, "sent"), ("advance", 100), ("end",)]
    assert rest.calls == [("begin", WEEK, 150, "sent"), ("advance", 100), ("advance", 50), ("end",)]
    assert unused.calls == []


def test_a_resumed_send_counts_the_rows_a_dead_senders_lease_still_holds_in_its_total(sender):
    "a sender leased 100 of 250 and died before posting them: the next send's total is all 250, and it sends them"
    from storage.db import session_scope
    from storage.deliveries import claim_batch

    issue = _opened(sender, 250)
    with session_scope(sender.services.engine) as session:  # a lease already over: anyone may take the rows
        claimed = claim_batch(session=session, issue_id=issue.id, owner="gone-host:1", now=NOW - timedelta(hours=1),
                              lease_until=NOW - timedelta(minutes=50), limit=100)
    assert len(claimed.rows) == 100
    sender.progress = progress = RecordingProgress()
    report = sender.send_issue(issue)
    assert progress.calls[0] == ("begin", WEEK, 250, "sent") and report.sent == 250


def test_a_batch_the_provider_refuses_for_good_is_not_counted_as_sent(sender):
    "the first of three batches refused (400): progress counts the 150 that went, of 250"
    issue = _opened(sender, 250)
    sender.services.transport.errors = [PermanentError("400 bad request")]
    sender.progress = progress = RecordingProgress()
    report = sender.send_issue(issue)
    assert report.failed == 100
    assert progress.calls == [("begin", WEEK, 250, "sent"), ("advance", 100), ("advance", 50), ("end",)]


def test_a_subscriber_import_reports_the_lines_of_the_file_per_chunk(engine, tmp_path):
    "12,000 rows and a blank line: total 12,001 lines after the header, reported at 5,000 and 10,000, then the rest"
    path = tmp_path / "list.csv"
    path.write_text("email,name\n" + "".join(f"reader{n}@example.com,Reader {n}\n" for n in range(12_000)) + "\n")
    progress = RecordingProgress()
    result = import_subscribers(engine=engine, path=path, now=NOW, progress=progress)
    assert result.created == 12_000
    assert progress.calls == [("begin", "list.csv", 12_001, "lines read"), ("advance", 5_000), ("advance", 5_000),
                              ("advance", 2_001), ("end",)]


def test_a_comparison_import_reports_its_items_per_hundred(engine, tmp_path):
    "250 comparisons: total 250, reported at 100 and 200, then the 50 left once committed"
    many = [another(f"tool-{n}-vs-other") for n in range(250)]
    path = tmp_path / "published.json"
    path.write_text(json.dumps(many))
    progress = RecordingProgress()
    result = import_comparisons(engine=engine, path=path, now=NOW, progress=progress)
    assert result.created == 250
    assert progress.calls == [("begin", "published.json", 250, "imported"), ("advance", 100), ("advance", 100),
                              ("advance", 50), ("end",)]


# -- the commands, not on a terminal: lines on stderr, stdout as before ----------------------------------------

# A line during the send; the last batch may land on a line of its own before the final one, with nothing left.
LINE = re.compile(r"^\d{4}-W\d{2}: ([\d,]+) of 3,000 sent \((\d+) %\), [\d,]+/s(, about [\d.]+ s left|, under a second left)?$")
FINAL = re.compile(r"^\d{4}-W\d{2}: 3,000 of 3,000 sent \(100 %\), [\d,]+/s, in [\d.]+ s$")


def test_digest_send_off_a_terminal_logs_its_progress_on_stderr_and_the_final_figures(sqlite_url, tmp_path):
    "`digest send` to a pipe, 3,000 subscribers in batches of 100, DIGEST_PROGRESS_SECONDS=0.2: lines on stderr"
    seed(sqlite_url, 3000)
    with FakeSendGrid(latency=0.02) as server:
        env = env_for(sqlite_url, server, DIGEST_BATCH_SIZE="100", DIGEST_PROGRESS_SECONDS="0.2")
        done = digest("send", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if re.match(r"\d{4}-W\d{2}: ", line)]
    during = [LINE.match(line) for line in lines[:-1]]
    assert len(during) >= 2 and all(during), done.stderr
    counts = [int(match[1].replace(",", "")) for match in during]
    assert counts == sorted(counts) and counts[0] < 3000
    assert FINAL.match(lines[-1]), done.stderr
    assert " of 3,000 sent" not in done.stdout and "3000" in done.stdout  # the report, as before, on stdout


def test_digest_worker_off_a_terminal_logs_its_progress_with_the_worker_log(sqlite_url, tmp_path):
    "`digest worker --once` on an opened issue of 3,000: timestamped progress lines, then the final figures"
    seed(sqlite_url, 3000)
    from storage.db import make_engine

    engine = make_engine(sqlite_url)
    opened = open_issue(engine=engine, week=WEEK, now=NOW)
    engine.dispose()
    assert opened.deliveries == 3000
    with FakeSendGrid(latency=0.02) as server:
        env = env_for(sqlite_url, server, DIGEST_PROGRESS_SECONDS="0.2")
        done = digest("worker", "--once", "--batch-size", "100", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    progress = [line.split("digest.progress: ", 1)[1] for line in done.stderr.splitlines() if "digest.progress: " in line]
    assert len(progress) >= 3 and all(LINE.match(line) for line in progress[:-1]), done.stderr
    assert FINAL.match(progress[-1]) and progress[-1].startswith(WEEK), done.stderr
    assert done.stdout.startswith("worker: sent 3000 in 30 batches")


def test_digest_subscribers_import_off_a_terminal_ends_with_its_figures_on_stderr(sqlite_url, tmp_path):
    "`digest subscribers import` to a pipe: the summary on stdout as before, the final progress line on stderr"
    from storage.migrate import upgrade

    upgrade(sqlite_url)
    path = tmp_path / "list.csv"
    path.write_text("email\n" + "".join(f"r{n}@example.com\n" for n in range(3)))
    env = {"DIGEST_DATABASE_URL": sqlite_url, "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "digest.cli", "subscribers", "import", str(path)], env=env,
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{path}: 3 new, 0 already in the store") and done.stdout.count("\n") == 1
    assert re.fullmatch(r"list\.csv: 3 of 3 lines read \(100 %\), [\d,]+/s, in [\d.]+ s\n", done.stderr), done.stderr


# -- the bar, on a terminal --------------------------------------------------------------------------------

def test_on_a_terminal_the_bar_shows_label_done_of_total_rate_and_time_left_then_the_final_figures():
    "rich on a forced terminal: the bar with 120,000 of 1,000,000 sent, 8,400/s, 1 min 45 s left; then 'in'"
    screen = StringIO()
    console = Console(force_terminal=True, file=screen, width=140)
    clock = FakeClock()
    assert isinstance(progress_for(console), BarProgress)
    bar = BarProgress(console=console, clock=clock)
    bar.begin(WEEK, total=1_000_000, unit="sent")
    clock.now = 120_000 / 8_400
    bar.advance(120_000)
    bar.bar.refresh()
    shown = screen.getvalue()
    assert "2026-W49" in shown and "━" in shown
    assert "120,000 of 1,000,000 sent (12 %), 8,400/s, about 1 min 45 s left" in shown
    clock.now = 20.0
    bar.advance(880_000)
    bar.end()
    assert "1,000,000 of 1,000,000 sent (100 %), 50,000/s, in 20 s" in screen.getvalue()


def test_off_a_terminal_progress_is_plain_lines_on_the_consoles_file():
    "stderr redirected to a file: no bar, no escape codes, a plain line at the end"
    stream = StringIO()
    progress = progress_for(Console(file=stream, force_terminal=False), interval=5.0)
    assert isinstance(progress, LogProgress)
    progress.begin("list.csv", total=10, unit="lines read")
    progress.advance(10)
    progress.end()
    assert re.fullmatch(r"list\.csv: 10 of 10 lines read \(100 %\), [\d,]+/s, in [\d.]+ s\n", stream.getvalue())


def test_a_log_line_written_while_the_bar_is_drawn_appears_above_it_whole():
    "the worker's log handler streams to CurrentStderr: a rate-limit line lands above the bar, not inside it"
    import logging

    from digest.progress import CurrentStderr

    screen = StringIO()
    handler = logging.StreamHandler(CurrentStderr())
    log = logging.getLogger("tests.progress.bar")
    log.addHandler(handler)
    log.propagate = False
    try:
        bar = BarProgress(console=Console(force_terminal=True, file=screen, width=140), clock=FakeClock())
        bar.begin(WEEK, total=1000, unit="sent")
        log.warning("rate limited by the provider: waiting 1.0 s")
        bar.advance(1000)
        bar.end()
    finally:
        log.removeHandler(handler)
    shown = screen.getvalue()
    assert "rate limited by the provider: waiting 1.0 s\n" in shown
    assert shown.index("rate limited by the provider") < shown.rindex("1,000 of 1,000 sent")
