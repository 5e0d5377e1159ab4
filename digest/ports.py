"""Can a server listen on HOST:PORT? Asked before `digest serve` or `digest preview --serve` start uvicorn.

uvicorn finds out only once it has started: it logs an error with an errno, then exits 1, after the
preview has printed a URL that leads to whatever else holds the port. Binding first, the way uvicorn
will (SO_REUSEADDR, so a port whose last connections are still in TIME_WAIT counts as free), turns the
common mistakes into one line and leaves a tiny race: a server that takes the port in between still gets
uvicorn's own error.
"""

from __future__ import annotations

import errno
import socket


def listen_problem(host: str, port: int) -> str | None:
    """None when HOST:PORT can be bound now; else one line saying what is wrong and what to do."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn chooses
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except socket.gaierror:
        return f"cannot listen on {host}: no such address or host name; pass --host 127.0.0.1 or an address of this machine"
    except OverflowError:
        return f"port {port} is not a port number: pass --port with a number from 1 to 65535"
    except OSError as exc:
        return _bind_error(exc, host, port)
    return None


def _bind_error(exc: OSError, host: str, port: int) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} is already in use on {host}: stop the other server or pass --port N"
    if exc.errno == errno.EACCES:
        return f"port {port} on {host} needs privileges this user lacks (ports below 1024): pass --port 8000 or higher"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {host}: it is not an address of this machine; pass --host 127.0.0.1 or one of its addresses"
    return f"cannot listen on {host} port {port}: {exc.strerror or exc}"
