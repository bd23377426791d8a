"""A TCP proxy that can cut the replication connections it carries, as its own process.

``python -m tests.cdc.cut_proxy HOST PORT`` prints the port it listens on. SIGUSR1 cuts:
every byte of a *replication* connection (its startup packet names ``replication``) is
dropped both ways while its sockets stay open, as a stateful firewall does with a
connection it forgot, and new replication connections are closed; SIGUSR2 heals. Other
connections (the reader's heartbeat and snapshot sessions, the test's own) go on.

Over TLS (the local stack's default) the startup packet is encrypted, so the proxy also asks
the server which of its connections are walsenders: with ``CUT_PROXY_DSN`` set (a DSN of the
server, in the environment because it may carry a password), while cut it lists the
``client_port`` of every walsender in ``pg_stat_activity`` a few times a second and cuts the
links whose upstream socket has that port. A new replication connection during the cut is
then dropped once the server lists it (its bytes stop, it is not closed at once).

Its own process because libpq's blocking connect (``pq.PGconn.connect``, the replication
connection's) holds the GIL: a proxy thread in the test process could not forward its bytes.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time

cut = threading.Event()
links: list[_Link] = []
links_lock = threading.Lock()


class _Link:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port  # the client_port the server sees
        self.replication = False
        self.seen = b""  # the client's first bytes, until the startup packet is recognised


def _mark_walsenders(dsn: str) -> None:
    """While cut: mark the links the server says are replication connections."""
    import psycopg

    while True:
        cut.wait()
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
                while cut.is_set():
                    ports = {row[0] for row in conn.execute(
                        "SELECT client_port FROM pg_stat_activity WHERE backend_type = 'walsender'")}
                    with links_lock:
                        for link in links:
                            if link.upstream_port in ports:
                                link.replication = True
                    time.sleep(0.2)
        except psycopg.Error as exc:
            print(f"cut_proxy: cannot list walsenders: {exc}", file=sys.stderr, flush=True)
            time.sleep(1)


def _pump(src: socket.socket, dst: socket.socket, link: _Link, from_client: bool) -> None:
    try:
        while data := src.recv(65536):
            if from_client and not link.replication and len(link.seen) < 4096:
                link.seen += data
                link.replication = b"replication\x00" in link.seen
                if link.replication and cut.is_set():
                    break  # a new replication connection while cut: refused
            if not (link.replication and cut.is_set()):
                dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):
            try:
                sock.close()
            except OSError:
                pass


def main() -> None:
    target = (sys.argv[1], int(sys.argv[2]))
    signal.signal(signal.SIGUSR1, lambda *_: cut.set())
    signal.signal(signal.SIGUSR2, lambda *_: cut.clear())
    listener = socket.create_server(("127.0.0.1", 0))
    print(listener.getsockname()[1], flush=True)
    dsn = os.environ.get("CUT_PROXY_DSN")
    if dsn:
        threading.Thread(target=_mark_walsenders, args=(dsn,), daemon=True).start()
    while True:
        client, _ = listener.accept()
        upstream = socket.create_connection(target)
        link = _Link(upstream.getsockname()[1])
        with links_lock:
            links.append(link)
        threading.Thread(target=_pump, args=(client, upstream, link, True), daemon=True).start()
        threading.Thread(target=_pump, args=(upstream, client, link, False), daemon=True).start()


if __name__ == "__main__":
    main()
