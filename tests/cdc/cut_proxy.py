"""A TCP proxy whose network can be cut, run as its own process (``python -m tests.cdc.cut_proxy HOST PORT``).

Its own process because libpq's blocking connect (``pq.PGconn.connect``, the replication
connection's) holds the GIL: a proxy thread in the test process could not forward its bytes.
Prints the port it listens on. SIGUSR1 cuts the network: every byte is dropped both ways,
sockets stay open (as behind a dead router) and new connections are refused; SIGUSR2 heals it.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading

cut = threading.Event()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            if not cut.is_set():
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
        if cut.is_set():
            client.close()
            continue
        upstream = socket.create_connection(target)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=_pump, args=(a, b), daemon=True).start()


if __name__ == "__main__":
    main()
