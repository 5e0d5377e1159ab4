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

# An idle writer woken by one open waits this long for more before its transaction: the web process writes
# each open down as it comes, and without the wait a writer faster than the traffic commits a few at a
# time (34-37 µs of writer CPU per open under wrk, against 19-28 µs with it, on cores it shares with the
# web process). The GIF does not wait for the commit, so the delay is unseen.
GATHER_SECONDS = 0.002


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    up, down = os.dup(1), 0
    os.dup2(2, 1)  # the pipe up is ours alone: anything a library prints goes to stderr

    from digest.track.opens import record_opens
    from storage.db import make_engine

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s open writer: %(message)s")
    engine = make_engine(os.environ[URL_VARIABLE])
    window = float(os.environ[WINDOW_VARIABLE])
    buffer, ended = bytearray(), False
    while True:
        opens = [marshal.loads(frame) for frame in frames(buffer)]
        # Whatever else has arrived joins this transaction (group commit), without waiting for more, except
        # after a quiet spell (GATHER_SECONDS).
        while not ended and len(opens) < MAX_BATCH and (not opens or select.select([down], [], [], 0)[0]):
            quiet = not opens
            chunk = os.read(down, 1 << 16)
            ended = not chunk
            buffer += chunk
            opens += [marshal.loads(frame) for frame in frames(buffer)]
            if quiet and not ended:
                time.sleep(GATHER_SECONDS)
        if not opens:
            break  # input ended, everything committed and confirmed
        for start in range(0, len(opens), MAX_BATCH):
            batch = [(RecipientRef(*fields), agent, datetime.fromtimestamp(now, timezone.utc))
                     for fields, agent, now in opens[start:start + MAX_BATCH]]
            try:
                record_opens(engine=engine, opens=batch, window_seconds=window)
                answer = (len(batch), None)
            except Exception as exc:  # noqa: BLE001 — the web process logs it; the writer carries on
                answer = (len(batch), f"{type(exc).__name__}: {exc}")
            up = _confirm(up, answer)
    engine.dispose()


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
