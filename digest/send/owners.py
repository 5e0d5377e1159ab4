"""Who holds a lease: each sending process names itself host:pid:random, and a rerun on the same host can tell
at once that an owner died (it crashed or was killed) instead of waiting out its lease."""

from __future__ import annotations

import os
import socket
import uuid


def new_owner() -> str:
    """This process's lease-owner name: host, pid, and a random part so two senders in one process differ."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def is_dead_here(owner: str) -> bool:
    """True when a lease owner is a process on this host that no longer runs (it crashed or was killed)."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False  # our own earlier lease in this process: not dead, just ours (rerun in-process)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False
