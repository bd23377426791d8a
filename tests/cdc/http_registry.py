"""A small Confluent-compatible schema registry over real HTTP, for the typed reader's outage tests.

confluent-kafka's ``mock://`` registry lives in the client's process and cannot go away; this
one is a socket that can: :meth:`HttpRegistry.stop` closes it (connection refused, as when the
registry's host restarts), :meth:`HttpRegistry.start` opens it again on the same port with the
versions it had, and ``answer`` makes every request get that HTTP status instead (401: the
credentials were revoked). Only the endpoints the reader and ``TypedDecoder`` call.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class HttpRegistry:
    def __init__(self) -> None:
        self.subjects: dict[str, list[tuple[int, str]]] = {}  # subject -> [(id, schema)] by version
        self.schemas: list[str] = []  # id - 1 -> schema
        self.answer: int | None = None  # every request answered with this status
        self.requests = 0
        self.lock = threading.Lock()
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        server = ThreadingHTTPServer(("127.0.0.1", self.port), _handler(self))
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # --- the registry's answers: (status, body)
    def handle(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        with self.lock:
            self.requests += 1
            if self.answer is not None:
                return self.answer, {"error_code": self.answer * 100 + 1, "message": "Unauthorized"}
            path = path.split("?", 1)[0]
            if method == "GET" and path == "/config":
                return 200, {"compatibilityLevel": "FULL"}
            if method == "GET" and path.startswith("/config/"):
                return 404, {"error_code": 40408, "message": "Subject does not have subject-level compatibility"}
            if m := re.fullmatch(r"/schemas/ids/(\d+)", path):
                n = int(m[1])
                if not 0 < n <= len(self.schemas):
                    return 404, {"error_code": 40403, "message": "Schema not found"}
                return 200, {"schema": self.schemas[n - 1]}
            if m := re.fullmatch(r"/subjects/([^/]+)/versions", path):
                subject = m[1]
                versions = self.subjects.get(subject)
                if method == "GET":
                    if not versions:
                        return 404, {"error_code": 40401, "message": "Subject not found"}
                    return 200, list(range(1, len(versions) + 1))
                return 200, {"id": self._register(subject, body["schema"])}
            if m := re.fullmatch(r"/subjects/([^/]+)/versions/(\d+|latest)", path):
                versions = self.subjects.get(m[1]) or []
                n = len(versions) if m[2] == "latest" else int(m[2])
                if not 0 < n <= len(versions):
                    return 404, {"error_code": 40402, "message": "Version not found"}
                return 200, self._registered(m[1], n)
            if method == "POST" and (m := re.fullmatch(r"/subjects/([^/]+)", path)):
                for n, (_, schema) in enumerate(self.subjects.get(m[1]) or [], 1):
                    if json.loads(schema) == json.loads(body["schema"]):
                        return 200, self._registered(m[1], n)
                return 404, {"error_code": 40403, "message": "Schema not found"}
            return 404, {"error_code": 404, "message": f"no route {method} {path}"}

    def _register(self, subject: str, schema: str) -> int:
        versions = self.subjects.setdefault(subject, [])
        for schema_id, known in versions:
            if json.loads(known) == json.loads(schema):
                return schema_id
        self.schemas.append(schema)
        versions.append((len(self.schemas), schema))
        return len(self.schemas)

    def _registered(self, subject: str, n: int) -> dict[str, Any]:
        schema_id, schema = self.subjects[subject][n - 1]
        return {"subject": subject, "version": n, "id": schema_id, "schema": schema}


def _handler(registry: HttpRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            from urllib.parse import unquote

            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            status, answer = registry.handle(method, unquote(self.path), body)
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            self._serve("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._serve("POST")

        def log_message(self, *_: Any) -> None:
            pass

    return Handler
