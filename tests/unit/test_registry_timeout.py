"""A registry that accepts the connection and never answers is a timeout, not a hang."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from streams.serde import registry


def test_a_registry_that_never_answers_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)  # accepted by the kernel, never read, never answered
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    monkeypatch.setattr(registry, "REGISTRY_TIMEOUT_S", 0.5)
    client = registry.registry_client(f"http://127.0.0.1:{server.getsockname()[1]}")
    outcome: list[BaseException | object] = []

    def ask() -> None:
        try:
            outcome.append(client.get_subjects())
        except Exception as exc:  # noqa: BLE001 - what it raised is the assertion below
            outcome.append(exc)

    started = time.monotonic()
    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    asker.join(60)  # without a timeout the request would wait forever: fail here instead of hanging
    took = time.monotonic() - started
    stop.set()
    for conn in held:
        conn.close()
    server.close()
    assert outcome, f"the registry request still waits after {took:.0f} s"
    error = outcome[0]
    assert isinstance(error, Exception), error
    assert "timed out" in str(error).lower() or "timeout" in type(error).__name__.lower(), repr(error)
