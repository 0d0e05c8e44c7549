"""A model server's admin API for the operator's tests: it records each call it gets.

It answers as the real server's admin API does (server/modelplane/server):
`GET /adapters` lists what the replica holds, `PUT /adapters/{name}` with
`{"source", "revision"}` loads (a second PUT with another source or revision
reloads; the same one is a no-op), `DELETE /adapters/{name}` unloads (404 if
unknown), errors in the OpenAI envelope. It loads nothing: a test decides
which loads fail (`fail`), and reads what the operator asked for (`calls`).
A real HTTP server on 127.0.0.1, so the operator's client, timeouts and
error handling are the ones production runs.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import unquote

from tests.integration.operator.fake_pods import QuietServer


class FakeAdmin:
    def __init__(self) -> None:
        self.held: dict[str, dict[str, Any]] = {}  # name -> entry, as GET /adapters lists it
        self.calls: list[tuple[str, str, dict[str, Any] | None]] = []  # (method, name, body)
        self.fail: dict[str, str] = {}  # adapter -> error message its loads answer
        self.listed = 0  # GET /adapters calls
        self.lock = threading.Lock()
        admin = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str) -> None:
                self._answer(status, {"error": {"message": message, "type": "invalid_request"}})

            def _name(self) -> str | None:
                prefix = "/adapters/"
                return unquote(self.path[len(prefix) :]) if self.path.startswith(prefix) else None

            def do_GET(self) -> None:
                if self.path != "/adapters":
                    self._error(404, "no route")
                    return
                with admin.lock:
                    admin.listed += 1
                    entries = list(admin.held.values())
                self._answer(200, {"adapters": entries})

            def do_PUT(self) -> None:
                name = self._name()
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if name is None:
                    self._error(404, "no route")
                    return
                with admin.lock:
                    admin.calls.append(("PUT", name, body))
                    error = admin.fail.get(name)
                    if error is None:
                        entry = {
                            "name": name,
                            "source": body["source"],
                            "revision": body.get("revision"),
                            "state": "loaded",
                            "error": None,
                        }
                        admin.held[name] = entry
                if error is not None:
                    self._error(400, error)
                else:
                    self._answer(200, entry)

            def do_DELETE(self) -> None:
                name = self._name()
                if name is None:
                    self._error(404, "no route")
                    return
                with admin.lock:
                    admin.calls.append(("DELETE", name, None))
                    known = admin.held.pop(name, None)
                if known is None:
                    self._error(404, f"no adapter {name}")
                else:
                    self._answer(200, known)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.http = QuietServer(("127.0.0.1", 0), Handler)
        self.port = int(self.http.server_address[1])
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def made(self, method: str | None = None) -> list[tuple[str, str, dict[str, Any] | None]]:
        """The calls that changed something (PUT, DELETE), of one method or all."""
        with self.lock:
            return [c for c in self.calls if method is None or c[0] == method]

    def holds(self) -> dict[str, str | None]:
        """adapter -> revision, of what this replica holds."""
        with self.lock:
            return {name: entry["revision"] for name, entry in self.held.items()}

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
