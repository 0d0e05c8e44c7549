"""The server's admin listener: loading and unloading LoRA adapters at run time.

A pure-ASGI app served on its own port (`--admin-port`, same host as the
public one), so no route of it is ever reachable through the public port or
a Service that exposes only that port. Only the operator calls it. Requests
present the server's API keys when it has any. Routes:

- `GET /adapters` -> 200 `{"adapters": [{name, source, revision, state, error}]}`
- `PUT /adapters/{name}` with `{"source": "...", "revision": "..."}` (revision
  optional) -> 200 with the adapter's entry once the engine serves it
- `DELETE /adapters/{name}` -> 200 `{"deleted": name}`, 404 when unknown

Errors are the OpenAI envelope (`http.errors`), as on the public port.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

from modelplane.http.asgi import Receive, Scope, Send
from modelplane.http.errors import send_error, send_json
from modelplane.http.json_body import BodyProblem, not_an_object, parse_json_body
from modelplane.http.key_store import ApiKeys
from modelplane.http.request_body import (
    BodyTimeoutError,
    BodyTooLargeError,
    ClientGoneError,
    read_request_body,
)
from modelplane.server.adapter_registry import AdapterRegistry, AdapterRequestError
from modelplane.server.adapter_sources import source_problem
from modelplane.server.adapters import name_problem

ADAPTERS_PATH: Final = "/adapters"
# A PUT body is a source URL and a revision: a few hundred bytes.
MAX_BODY_BYTES: Final = 16 * 1024
BODY_TIMEOUT_S: Final = 10.0
MAX_REVISION_CHARS: Final = 256
_REVISION: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
_BODY_FIELDS: Final = frozenset({"source", "revision"})


def put_body_problem(body: Any) -> str | None:
    """What is wrong with a parsed PUT body, or None."""
    if (problem := not_an_object(body)) is not None:
        return problem.message
    unknown = sorted(set(body) - _BODY_FIELDS)
    if unknown:
        return f"unknown field {unknown[0][:80]!r}; a body has 'source' and 'revision'"
    source = body.get("source")
    if not isinstance(source, str) or not source:
        return "'source' must be a string: file:///PATH, pvc://CLAIM/PATH or hf://ORG/NAME"
    if (problem_text := source_problem(source)) is not None:
        return problem_text
    revision = body.get("revision")
    if revision is not None and (
        not isinstance(revision, str)
        or len(revision) > MAX_REVISION_CHARS
        or not _REVISION.match(revision)
        or ".." in revision
    ):
        return "'revision' must be a branch, tag or commit (letters, digits, '.', '_', '-', '/')"
    return None


class AdminApp:
    def __init__(self, registry: AdapterRegistry, keys: ApiKeys) -> None:
        self.registry = registry
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _accept_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if not self.keys.allows(scope):
            await send_error(
                send, 401, "missing or invalid API key; send 'Authorization: Bearer <key>'"
            )
            return
        if path == ADAPTERS_PATH:
            if method != "GET":
                await send_error(send, 405, f"use GET for {ADAPTERS_PATH}")
                return
            entries = [e.view() for e in self.registry.entries()]
            await _send_object(send, 200, {"adapters": entries})
            return
        if not path.startswith(ADAPTERS_PATH + "/"):
            await send_error(send, 404, f"no route {method} {path[:200]}")
            return
        name = path.removeprefix(ADAPTERS_PATH + "/")
        if method not in ("PUT", "DELETE"):
            await send_error(send, 405, "use PUT or DELETE for /adapters/{name}")
            return
        if (problem := name_problem(name, self.registry.base_model)) is not None:
            await send_error(send, 400, problem)
            return
        try:
            if method == "PUT":
                await self._put(name, scope, receive, send)
            else:
                await self.registry.delete(name)
                await _send_object(send, 200, {"deleted": name})
        except AdapterRequestError as err:
            param = "source" if err.status in (422, 502) else None
            await send_error(send, err.status, str(err), param=param)

    async def _put(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            raw = await read_request_body(
                scope, receive, max_bytes=MAX_BODY_BYTES, timeout_s=BODY_TIMEOUT_S
            )
        except BodyTooLargeError:
            await send_error(send, 413, f"request body exceeds {MAX_BODY_BYTES} bytes")
            return
        except BodyTimeoutError:
            await send_error(send, 408, "the request body did not arrive in time", close=True)
            return
        except ClientGoneError:
            return
        body = parse_json_body(raw) if raw else BodyProblem("the body must be a JSON object")
        if isinstance(body, BodyProblem):
            await send_error(send, 400, body.message)
            return
        problem = put_body_problem(body)
        if problem is not None:
            await send_error(send, 400, problem)
            return
        entry = await self.registry.put(name, body["source"], body.get("revision"))
        await _send_object(send, 200, entry.view())


async def _accept_lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _send_object(send: Send, status: int, payload: dict[str, Any]) -> None:
    await send_json(send, status, json.dumps(payload).encode())
