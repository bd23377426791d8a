"""A PostgreSQL server that only ever refuses the password, for the wrong-password path.

The local stack trusts loopback connections (and must not be reconfigured under other
tests), so a real "password authentication failed" cannot be had from it. This speaks
just enough of the protocol for libpq to produce the genuine failure: it declines SSL
and GSS encryption, asks for a clear-text password, and answers with the FATAL error
(SQLSTATE 28P01) a real server sends.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104


def _read_exact(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("client went away")
        data += chunk
    return data


def _error(code: str, message: str) -> bytes:
    fields = b"".join(
        kind + value.encode() + b"\0"
        for kind, value in ((b"S", "FATAL"), (b"V", "FATAL"), (b"C", code), (b"M", message))
    ) + b"\0"
    return b"E" + struct.pack("!I", len(fields) + 4) + fields


def _serve_one(conn: socket.socket) -> None:
    with conn:
        while True:
            length, code = struct.unpack("!II", _read_exact(conn, 8))
            if code in (SSL_REQUEST, GSSENC_REQUEST):
                conn.sendall(b"N")  # no encryption: go on in the clear
                continue
            startup = _read_exact(conn, length - 8)
            break
        params = startup.split(b"\0")
        user = params[params.index(b"user") + 1].decode() if b"user" in params else "?"
        conn.sendall(b"R" + struct.pack("!II", 8, 3))  # AuthenticationCleartextPassword
        kind = _read_exact(conn, 1)
        if kind == b"p":
            (size,) = struct.unpack("!I", _read_exact(conn, 4))
            _read_exact(conn, size - 4)
        conn.sendall(_error("28P01", f'password authentication failed for user "{user}"'))


@contextmanager
def password_refusing_server() -> Iterator[int]:
    """Listen on a free loopback port (yielded) until the block ends."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                _serve_one(conn)
            except (ConnectionError, OSError, struct.error):
                pass  # the client hung up early: nothing to answer

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        server.close()
