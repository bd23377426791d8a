"""Long-running ``insights`` services as real processes: their port, endpoints and every stderr line."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

INSIGHTS = str(Path(sys.executable).with_name("insights"))


def default_service_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with JSON logs and the *default* metrics port (the test settings turn it off)."""
    env = dict(env)
    env.pop("INSIGHTS_METRICS_PORT", None)
    env["INSIGHTS_LOG_JSON"] = "true"
    return env


class ServiceProcess:
    """One ``insights …`` service; stderr and stdout are collected line by line as they come."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.args = args
        self.process = subprocess.Popen(
            [INSIGHTS, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.stderr: list[str] = []
        self.stdout: list[str] = []
        self._readers = [
            threading.Thread(target=self._collect, args=(self.process.stderr, self.stderr), daemon=True),
            threading.Thread(target=self._collect, args=(self.process.stdout, self.stdout), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _collect(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line.rstrip("\n"))

    def records(self) -> list[dict[str, Any]]:
        """Every stderr line so far as a JSON object; any other line fails the test."""
        found = []
        for line in list(self.stderr):
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                raise AssertionError(f"{' '.join(self.args)}: not a JSON line on stderr: {line!r}") from None
            assert isinstance(doc, dict), line
            found.append(doc)
        return found

    def wait_for_record(self, predicate: Any, timeout: float = 60.0, what: str = "a log line") -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for doc in self.records():
                if predicate(doc):
                    return doc
            if self.process.poll() is not None:
                time.sleep(0.2)  # the last lines may still be on their way
                for doc in self.records():
                    if predicate(doc):
                        return doc
                raise AssertionError(f"{' '.join(self.args)} exited {self.process.returncode} before {what}:\n"
                                     + "\n".join(self.stderr[-30:]))
            time.sleep(0.1)
        raise AssertionError(f"{' '.join(self.args)}: no {what} within {timeout}s:\n" + "\n".join(self.stderr[-30:]))

    def port(self, timeout: float = 60.0) -> int:
        """The port the service says it serves /metrics and /healthz on."""
        doc = self.wait_for_record(lambda d: d.get("msg") == "metrics and health endpoint up", timeout, "endpoint")
        return int(doc["port"])

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port()}{path}", timeout=5) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def wait_health(self, status: int, timeout: float = 60.0) -> dict[str, Any]:
        """Poll /healthz until it answers ``status``; its JSON body."""
        deadline = time.monotonic() + timeout
        last: tuple[int, bytes] | None = None
        while time.monotonic() < deadline:
            try:
                last = self.get("/healthz")
            except OSError:
                last = None
            if last is not None and last[0] == status:
                return json.loads(last[1])
            assert self.process.poll() is None, f"exited {self.process.returncode}:\n" + "\n".join(self.stderr[-30:])
            time.sleep(0.2)
        raise AssertionError(f"/healthz never answered {status} within {timeout}s (last: {last})")

    def terminate(self, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        finally:
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait(10)
        for reader in self._readers:
            reader.join(10)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        for reader in self._readers:
            reader.join(10)


def served_default_port_or_said_why(service: ServiceProcess, default: int = 9464) -> None:
    """A service on default settings serves the default port, or warned that it was taken."""
    port = service.port()
    if port == default:
        return
    moved = [d for d in service.records() if d.get("requested_port") == default and d.get("level") == "warning"]
    assert moved and moved[0]["port"] == port, f"port {port} without a warning about {default}"


class TcpProxy:
    """A TCP forwarder to ``target`` that can be cut (listener closed, connections dropped) and restored.

    A dependency that "goes away" without restarting the shared server other tests use:
    while cut, connecting to the proxy's port is refused, exactly as with a dead host.
    """

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._lock = threading.Lock()
        self._sockets: list[Any] = []
        self._listener: Any = None
        self.port = self._listen(0)

    def _listen(self, port: int) -> int:
        import socket

        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return int(listener.getsockname()[1])

    def _accept(self, listener: Any) -> None:
        import socket

        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: Any, sink: Any) -> None:
        import socket

        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        import socket

        try:
            # wakes the accept() in progress; a bare close() leaves it waiting, and the next
            # client would still be let through once
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def restore(self) -> None:
        self._listen(self.port)

    def close(self) -> None:
        self.cut()
