"""Hosts on one machine, for tests: each a network namespace joined to this one by its own veth link.

    with hosts("host-a", "host-b") as (a, b), Forwarder(("127.0.0.1", 5432)) as db:
        port = db.listen(a.gateway)        # host-a reaches PostgreSQL at a.gateway:port, over its link only
        subprocess.Popen(a.command(sys.executable, "-m", "digest.cli", "worker"), ...)
        a.cut()                            # the link goes down; the process keeps running and is not told
        a.reconnect()

A host has its own loopback and its own host name (a UTS namespace: lease owners name their host), and
reaches this machine only at its ``gateway``, the address on our end of its link. ``cut`` takes that end
down: the host's interface loses its carrier and what it sends is dropped, as when a switch port or a cable
fails — no error, no reset, connections just stop answering. Needs root and iproute2 (`ip`); without them
setting up raises, it does not skip.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

# Sets the host name in the new UTS namespace, then runs the command in its place (same pid).
_AS_HOST = "import os, socket, sys; socket.sethostname(sys.argv[1]); os.execvp(sys.argv[2], sys.argv[2:])"


@dataclass(frozen=True)
class Host:
    name: str
    netns: str
    link: str  # our end of the veth pair: down means the host is cut off
    gateway: str  # our end's address: the host reaches this machine there
    address: str  # the host's own address, on its end of the link

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside this host: its network namespace and its host name."""
        return ["ip", "netns", "exec", self.netns, "unshare", "--uts", "--",
                sys.executable, "-c", _AS_HOST, self.name, *argv]

    def cut(self) -> None:
        _ip("link", "set", self.link, "down")

    def reconnect(self) -> None:
        _ip("link", "set", self.link, "up")


def _ip(*args: str) -> None:
    try:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise RuntimeError("`ip` (iproute2) is not installed: .ci/run installs it from .ci/apt-packages") from None
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"`ip {' '.join(args)}` failed ({exc.stderr.strip()}): network namespaces and veth "
                           "links need root (CI runs .ci/run as root)") from None


@contextmanager
def hosts(*names: str) -> Iterator[list[Host]]:
    """One namespace and link per name, removed on the way out even after a failure.

    Names and addresses carry this process's id, so that test runs side by side on one machine do not collide:
    link n is 10.213.<pid % 250>.<4n>/30 (our end .4n+1, the host .4n+2)."""
    tag, subnet = os.getpid() % 100_000, os.getpid() % 250
    made: list[Host] = []
    try:
        for n, name in enumerate(names):
            host = Host(name=name, netns=f"digest-{tag}-{n}", link=f"dg{tag}h{n}",
                        gateway=f"10.213.{subnet}.{4 * n + 1}", address=f"10.213.{subnet}.{4 * n + 2}")
            inner = f"dg{tag}n{n}"
            _ip("netns", "add", host.netns)
            made.append(host)
            _ip("link", "add", host.link, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", host.netns)
            _ip("addr", "add", f"{host.gateway}/30", "dev", host.link)
            _ip("link", "set", host.link, "up")
            _ip("-n", host.netns, "addr", "add", f"{host.address}/30", "dev", inner)
            _ip("-n", host.netns, "link", "set", inner, "up")
            _ip("-n", host.netns, "link", "set", "lo", "up")
        yield made
    finally:
        for host in made:  # deleting our end deletes the pair at once; the namespace's own cleanup is deferred
            subprocess.run(["ip", "link", "del", host.link], capture_output=True, check=False)
            subprocess.run(["ip", "netns", "del", host.netns], capture_output=True, check=False)


class Forwarder:
    """TCP forwarding from addresses on this machine to one target (a server that listens on loopback only).

    Each accepted connection gets its own connection to the target and two threads copying bytes; a
    connection whose far side went silent (a host cut off) just waits, as the server itself would."""

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()

    def listen(self, address: str) -> int:
        """Forward connections made to ``address`` (on a port of its choosing, returned) to the target."""
        listener = socket.create_server((address, 0))
        self._keep(listener)
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return listener.getsockname()[1]

    def _keep(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept(self, listener: socket.socket) -> None:
        while not self._closed.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                continue  # closed: the loop ends
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):
                self._keep(sock)
            threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def __enter__(self) -> Forwarder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        for sock in (source, sink):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

