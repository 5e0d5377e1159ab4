"""The pixel's writer process (the contract and the wire format: digest.track.open_writer): reads opens from its
stdin until it ends, commits them in group commits, and confirms each transaction on its stdout for as long
as the web process is there to read it.

It ignores SIGINT and SIGTERM (a Ctrl-C or a process manager's stop reaches the whole process group) and
exits when its input ends.

    python -m digest.track.open_writer_child   # started only by OpenWriter; reads DIGEST_OPEN_WRITER_URL
"""

from __future__ import annotations

import logging
import marshal
import os
import select
import signal
import time
from datetime import datetime, timezone

from digest.links import RecipientRef
from digest.track.open_writer import MAX_BATCH, URL_VARIABLE, WINDOW_VARIABLE, frames, write_all

# Transactions begin at most every GATHER_SECONDS: what arrives meanwhile joins the next one (group commit).
# A writer that committed whatever had arrived, as soon as it had, made transactions of 20-40 opens under
# wrk, and a transaction's fixed cost (BEGIN, the SELECT, COMMIT, SQLAlchemy's connection handling:
# ~0.5 ms on SQLite) was a third of its CPU: 25-30 µs of writer CPU per open on cores it shares with the
# web process. 10 ms makes ~150-opens transactions at 15,000 opens/s (18-22 µs per open; benchmarks/
# tracking.py). The GIF never waits for the commit, so the delay is unseen; a clean shutdown waits it once.
GATHER_SECONDS = 0.010


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    up, down = os.dup(1), 0
    os.dup2(2, 1)  # the pipe up is ours alone: anything a library prints goes to stderr

    from storage.db import make_engine

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s open writer: %(message)s")
    engine = make_engine(os.environ[URL_VARIABLE])
    window = float(os.environ[WINDOW_VARIABLE])
    buffer, ended, began = bytearray(), False, float("-inf")
    while True:
        opens = [marshal.loads(frame) for frame in frames(buffer)]
        if not opens and not ended:  # idle: wait for the next open
            chunk = os.read(down, 1 << 16)
            ended = not chunk
            buffer += chunk
        pause = began + GATHER_SECONDS - time.monotonic()
        if pause > 0 and not ended:
            time.sleep(pause)
        # Whatever else has arrived joins this transaction, up to MAX_BATCH.
        while not ended and len(opens) < MAX_BATCH and select.select([down], [], [], 0)[0]:
            chunk = os.read(down, 1 << 16)
            ended = not chunk
            buffer += chunk
            opens += [marshal.loads(frame) for frame in frames(buffer)]
        opens += [marshal.loads(frame) for frame in frames(buffer)]
        if not opens:
            if ended:
                break  # input ended, everything committed and confirmed
            continue
        began = time.monotonic()
        for start in range(0, len(opens), MAX_BATCH):
            up = _confirm(up, commit(engine=engine, opens=opens[start:start + MAX_BATCH], window_seconds=window))
    engine.dispose()


def commit(*, engine, opens: list[tuple], window_seconds: float) -> tuple[int, str | None]:
    """Record ``opens`` (decoded frames) in one transaction; the answer to send up: (how many, None or
    the error that rolled them back)."""
    from digest.track.opens import record_opens

    batch = [(RecipientRef(*fields), agent, datetime.fromtimestamp(now, timezone.utc)) for fields, agent, now in opens]
    try:
        record_opens(engine=engine, opens=batch, window_seconds=window_seconds)
    except Exception as exc:  # noqa: BLE001 — the web process logs it; the writer carries on
        return len(batch), f"{type(exc).__name__}: {exc}"
    return len(batch), None


def _confirm(up: int | None, answer: tuple) -> int | None:
    """Send ``answer`` up; None once the web process is gone (killed): what is still in the pipe down
    was answered to someone, so the writer goes on committing it to the end, confirming to nobody."""
    if up is not None:
        frame = marshal.dumps(answer)
        try:
            write_all(up, len(frame).to_bytes(4, "big") + frame)
        except OSError:  # BrokenPipeError: Python ignores SIGPIPE, so the write fails instead of killing us
            os.close(up)
            return None
    return up


if __name__ == "__main__":
    main()
