"""Child processes of a web process (the pixel writer, the signup mailer): one way to start them.

A new interpreter, not fork (the web process has threads) and not multiprocessing's spawn (which runs the
parent's main script again in the child). The child imports the same `digest` as its parent, wherever that
was imported from (a checkout, a test's PYTHONPATH), and talks over its stdin and stdout pipes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

_SOURCE_ROOT = str(Path(__file__).resolve().parents[1])


def start_child(module: str, **env: str) -> subprocess.Popen:
    """``python -m MODULE`` with pipes on stdin and stdout, this process's environment plus ``env``."""
    pythonpath = os.pathsep.join(filter(None, [_SOURCE_ROOT, os.environ.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            env={**os.environ, **env, "PYTHONPATH": pythonpath}, close_fds=True)
