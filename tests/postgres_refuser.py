"""A server that speaks just enough of PostgreSQL's wire protocol to ask for a password and refuse it.

The test server trusts every local connection, so it cannot show what a wrong password does; this one
answers the way PostgreSQL with password authentication does (protocol 3.0: SSL and GSS requests
declined with 'N', AuthenticationCleartextPassword, then an ErrorResponse with SQLSTATE 28P01), so the
real driver meets a real refusal.
"""

from __future__ import annotations

import socket
import struct
import threading

SSL_REQUEST, GSSENC_REQUEST = 80877103, 80877104


class PasswordRefuser:
    """``with PasswordRefuser() as port:``: a listener on 127.0.0.1:port that refuses every password."""

    def __enter__(self) -> int:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self._listener.getsockname()[1]

    def __exit__(self, *_exc) -> None:
        self._listener.close()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed by __exit__
                return
            with client:
                try:
                    self._refuse(client)
                except OSError:
                    pass

    def _refuse(self, client: socket.socket) -> None:
        user = "?"
        while True:  # SSL and GSS encryption requests come first, each its own 8-byte message
            length, code = struct.unpack("!ii", _read(client, 8))
            body = _read(client, length - 8)
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                client.sendall(b"N")
                continue
            fields = body.split(b"\0")
            user = dict(zip(fields[::2], fields[1::2])).get(b"user", b"?").decode()
            break
        client.sendall(b"R" + struct.pack("!ii", 8, 3))  # AuthenticationCleartextPassword
        kind, length = struct.unpack("!ci", _read(client, 5))
        _read(client, length - 4)  # the password message
        fields = [b"SFATAL", b"VFATAL", b"C28P01", f'Mpassword authentication failed for user "{user}"'.encode()]
        payload = b"".join(field + b"\0" for field in fields) + b"\0"
        client.sendall(b"E" + struct.pack("!i", len(payload) + 4) + payload)


def _read(client: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = client.recv(count - len(data))
        if not chunk:
            raise ConnectionError("the client closed the connection")
        data += chunk
    return data
