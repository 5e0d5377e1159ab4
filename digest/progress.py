"""Progress of long work: a bar on a terminal, a line every few seconds in a log or a file.

The work — a send (digest.send.loop), a worker, an import — knows nothing of terminals. It reports through
`Progress`: ``begin`` once its total is known, ``advance`` once per batch, ``end`` when it stops, done
or not. Per batch, never per row: a million-recipient send reports 1,000 times, and the log mode then
costs one ``monotonic()`` and a comparison per batch (benchmarks/send.py shows no difference). The entry
point chooses the display (`progress_for`): `BarProgress` when stderr is a terminal, else `LogProgress`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

DEFAULT_INTERVAL = 5.0  # seconds between log lines: a line a minute would look hung, one a second floods a log


class Progress(Protocol):
    """What long work reports. Every implementation takes any number of begin … end rounds."""

    def begin(self, label: str, *, total: int, unit: str) -> None:
        """Work named ``label`` starts with ``total`` items ahead; ``unit`` is what is done to them ("sent")."""

    def advance(self, count: int) -> None:
        """``count`` more items are done: call once per batch, never per item."""

    def end(self) -> None:
        """The work stopped (done, stopped or failed): show where it ended."""


class NullProgress:
    """Shows nothing. See `Progress`."""

    def begin(self, label: str, *, total: int, unit: str) -> None:
        pass

    def advance(self, count: int) -> None:
        pass

    def end(self) -> None:
        pass


@dataclass
class Tally:
    """Where one round of work stands, and how it reads: "120,000 of 1,000,000 sent (12 %), 8,400/s, …"."""

    label: str
    total: int
    unit: str
    started: float
    done: int = 0

    def figures(self, now: float, *, final: bool = False) -> str:
        total = max(self.total, self.done)  # a total counted ahead may be a little short
        text = f"{self.done:,} of {total:,} {self.unit}"
        if total:
            text += f" ({self.done * 100 // total} %)"
        seconds = now - self.started
        rate = self.done / seconds if seconds > 0 else 0.0
        if rate:
            text += f", {rate:,.0f}/s"
        if final:
            return text + f", in {duration(seconds)}"
        if rate and total > self.done:
            left = (total - self.done) / rate
            text += f", about {duration(left)} left" if left >= 1 else ", under a second left"
        return text

    def line(self, now: float, *, final: bool = False) -> str:
        return f"{self.label}: {self.figures(now, final=final)}"


def duration(seconds: float) -> str:
    """45 s, 1 min 45 s, 2 h 05 min: as precise as a person reading a progress line needs."""
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


@dataclass
class LogProgress:
    """A line through ``write`` once ``interval`` seconds have passed since the last, and one at the end.

    No line at all for a round in which nothing was done (a worker's pass that found every row leased
    by another worker). ``clock`` is passed in so tests need no real waits.
    """

    write: Callable[[str], None]
    interval: float = DEFAULT_INTERVAL
    clock: Callable[[], float] = time.monotonic
    tally: Tally | None = field(default=None, init=False)
    last: float = field(default=0.0, init=False)

    def begin(self, label: str, *, total: int, unit: str) -> None:
        self.tally = Tally(label=label, total=total, unit=unit, started=self.clock())
        self.last = self.tally.started

    def advance(self, count: int) -> None:
        self.tally.done += count
        now = self.clock()  # the one clock reading per batch
        if now - self.last >= self.interval:
            self.last = now
            self.write(self.tally.line(now))

    def end(self) -> None:
        tally, self.tally = self.tally, None
        if tally is not None and tally.done:
            self.write(tally.line(self.clock(), final=True))


class BarProgress:
    """A rich progress bar on ``console`` (stderr on a terminal): label, bar, done of total, rate, time left.

    The figures are `Tally`'s, in the same words as the log lines; the bar redraws twice a second on
    rich's own thread, so a batch costs an addition and a clock reading. The last bar stays on screen.
    """

    def __init__(self, *, console, clock: Callable[[], float] = time.monotonic):
        self.console = console
        self.clock = clock
        self.tally: Tally | None = None
        self.bar = None

    def begin(self, label: str, *, total: int, unit: str) -> None:
        from rich.progress import BarColumn, Progress as Bar, TextColumn  # rich.progress: ~50 ms, only when shown

        self.tally = Tally(label=label, total=total, unit=unit, started=self.clock())
        self.bar = Bar(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[figures]}"),
                       console=self.console, refresh_per_second=2)
        self.task = self.bar.add_task(label, total=total or None, figures=self.tally.figures(self.tally.started))
        self.bar.start()

    def advance(self, count: int) -> None:
        self.tally.done += count
        self.bar.update(self.task, advance=count, figures=self.tally.figures(self.clock()))

    def end(self) -> None:
        if self.bar is None:
            return
        if self.tally.done:
            self.bar.update(self.task, figures=self.tally.figures(self.clock(), final=True))
        else:
            self.bar.remove_task(self.task)  # nothing done (every row leased elsewhere): leave no empty bar
        self.bar.stop()
        self.bar = self.tally = None


class CurrentStderr:
    """``sys.stderr`` as it is at each write. A log handler streaming here writes above a live bar: rich
    swaps ``sys.stderr`` while it draws, and a handler holding the original would write through the bar."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def progress_for(console, *, interval: float = DEFAULT_INTERVAL, write: Callable[[str], None] | None = None) -> Progress:
    """A bar when ``console`` is a terminal, else a line every ``interval`` seconds through ``write``
    (default: to the console's file, plain, flushed so that a pipe or a log shows it at once)."""
    if console.is_terminal:
        return BarProgress(console=console)
    if write is None:
        def write(line: str) -> None:
            console.file.write(line + "\n")
            console.file.flush()
    return LogProgress(write=write, interval=interval)
