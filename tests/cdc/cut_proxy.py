"""A TCP proxy that can cut the replication connections it carries, as its own process.

``python -m tests.cdc.cut_proxy HOST PORT`` prints the port it listens on. SIGUSR1 cuts:
every byte of a *replication* connection (its startup packet names ``replication``) is
dropped both ways while its sockets stay open, as a stateful firewall does with a
connection it forgot, and new replication connections are closed; SIGUSR2 heals. Other
connections (the reader's heartbeat and snapshot sessions, the test's own) go on.

Its own process because libpq's blocking connect (``pq.PGconn.connect``, the replication
connection's) holds the GIL: a proxy thread in the test process could not forward its bytes.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading

cut = threading.Event()


class _Link:
    def __init__(self) -> None:
        self.replication = False
        self.seen = b""  # the client's first bytes, until the startup packet is recognised


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
    while True:
        client, _ = listener.accept()
        upstream = socket.create_connection(target)
        link = _Link()
        threading.Thread(target=_pump, args=(client, upstream, link, True), daemon=True).start()
        threading.Thread(target=_pump, args=(upstream, client, link, False), daemon=True).start()


if __name__ == "__main__":
    main()
