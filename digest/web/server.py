"""How uvicorn serves the public app: `uvicorn_options()` is what `digest serve` runs, and what tests run.

uvicorn answers some requests itself, before the app sees them (a malformed request line or header): its
protocol class writes that 400. `HttpProtocol` makes those answers carry the same security headers as the
app's, caps the request line and headers together (httptools, unlike h11, has no cap of its own), and
gives them a deadline: uvicorn waits forever for a connection's first request, and for headers sent a byte
at a time, so a few hundred such connections would hold the process (slowloris). The body has its own
limits (`digest.web.limits`). No `server:` banner: it tells a scanner which server and version to try; the
`date:` header stays, since RFC 9110 §6.6.1 asks an origin server with a clock to send it.
"""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from digest.web.security import SECURITY_HEADERS

# The request line and headers together. A link's token is ~200 bytes and our cookie ~100; 32 KB leaves
# room for cookies other sites on the domain set, and is what nginx accepts (4 buffers of 8 KB).
MAX_HEAD_BYTES = 32 * 1024
# From the connection (or the previous answer) to the end of the headers: a client on a slow mobile link
# sends 32 KB of headers in well under a second. uvicorn's own keep-alive timeout (5 s) closes a connection
# that stays silent after an answer; this one also covers a connection that never spoke, or drips.
HEAD_SECONDS = 10.0

_RAW_SECURITY_HEADERS = b"".join(f"{name.lower()}: {value}\r\n".encode() for name, value in SECURITY_HEADERS.items())


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the security headers on its own answers, and a cap and a deadline
    on the request line and headers."""

    head_timer = None

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head_timer()  # for the next request on this connection

    def _arm_head_timer(self) -> None:
        self._disarm_head_timer()
        self.head_timer = self.loop.call_later(HEAD_SECONDS, self._head_too_slow)

    def _disarm_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_too_slow(self) -> None:
        self.head_timer = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return  # already closing, or a request is being answered (a pipelined one included)
        self._answer(b"408 Request Timeout",
                     f"The request line and headers did not arrive within {HEAD_SECONDS:g} s. Send them in one go.")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_bytes = 0
        self.head_too_large = False

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self.head_bytes += size
        if self.head_bytes > MAX_HEAD_BYTES:
            self.head_too_large = True
            raise ValueError("request head too large")  # the parser turns it into the 431 below

    def send_400_response(self, msg: str) -> None:
        """Called by uvicorn for whatever httptools could not parse; the connection is then closed."""
        if getattr(self, "head_too_large", False):
            self._answer(b"431 Request Header Fields Too Large", f"The request line and headers are larger than "
                                                                 f"{MAX_HEAD_BYTES // 1024} KB together. Send less.")
        else:
            self._answer(b"400 Bad Request", f"{msg} Check the request line and the headers.")

    def _answer(self, status: bytes, text: str) -> None:
        """Write STATUS with the security headers, then close the connection."""
        body = text.encode("ascii")
        default = b"".join(name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers)
        self.transport.write(b"HTTP/1.1 " + status + b"\r\n" + default + _RAW_SECURITY_HEADERS
                             + b"content-type: text/plain; charset=utf-8\r\n"
                             + b"content-length: " + str(len(body)).encode() + b"\r\n"
                             + b"connection: close\r\n\r\n" + body)
        self.transport.close()


def uvicorn_options(*, host: str, port: int, workers: int = 1, log_level: str = "info") -> dict:
    """Keyword arguments for `uvicorn.run(app, **…)` or `uvicorn.Config(app, **…)`.

    proxy_headers: the app runs behind a TLS-terminating proxy (README), which says who the client is.
    """
    return dict(host=host, port=port, workers=workers, proxy_headers=True, log_level=log_level,
                http=HttpProtocol, server_header=False, date_header=True)
