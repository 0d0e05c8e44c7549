"""The model server's admin API, as the operator calls it on one pod.

`GET /adapters` lists what a replica holds; `PUT /adapters/{name}` loads (or
reloads, for another source or revision) and answers when the adapter is
loaded; `DELETE /adapters/{name}` unloads (404: it was not there, which is
what was wanted). With the model's API key, each call carries it as a bearer
token. Every call is bounded in total time, like the autoscaler's scrapes
(httpx's timeouts are per phase), and a failure comes back as one readable
line naming the pod, never as an exception: one pod's failure is a status
entry, not a stopped loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import httpx

LIST_TIMEOUT_S: Final = 5.0
# A load downloads the adapter (hf://) and moves it into the engine: minutes, not seconds.
LOAD_TIMEOUT_S: Final = 600.0
UNLOAD_TIMEOUT_S: Final = 30.0
MAX_ERROR_CHARS: Final = 300


@dataclass(frozen=True)
class HeldAdapter:
    """One entry of a replica's `GET /adapters`."""

    name: str
    source: str
    revision: str | None
    state: str  # "loaded", "loading" or "failed"
    error: str | None = None


@dataclass(frozen=True)
class AdminTarget:
    pod: str  # the pod's name: what messages call it
    url: str  # base URL of its admin API, e.g. http://10.1.2.3:8001
    api_key: str | None = None  # the model's key, when the server requires one


def _headers(target: AdminTarget) -> dict[str, str]:
    return {"Authorization": f"Bearer {target.api_key}"} if target.api_key else {}


def _error_of(response: httpx.Response) -> str:
    """The OpenAI envelope's message, else the start of the body."""
    try:
        body = response.json()
        message = str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = response.text.strip()
    return f"HTTP {response.status_code}: {message[:MAX_ERROR_CHARS] or response.reason_phrase}"


async def _call(
    http: httpx.AsyncClient,
    target: AdminTarget,
    method: str,
    path: str,
    timeout_s: float,
    body: dict[str, Any] | None = None,
) -> httpx.Response | str:
    try:
        async with asyncio.timeout(timeout_s):
            return await http.request(
                method, f"{target.url}{path}", json=body, headers=_headers(target),
                timeout=timeout_s,
            )  # fmt: skip
    except (TimeoutError, httpx.TimeoutException):
        return f"pod {target.pod}: no answer from its admin API within {timeout_s:g}s"
    except httpx.HTTPError as exc:
        return f"pod {target.pod}: cannot reach its admin API: {type(exc).__name__}"


def _held(entries: Sequence[Any]) -> list[HeldAdapter]:
    held: list[HeldAdapter] = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ValueError("an entry without a name")
        revision = entry.get("revision")
        error = entry.get("error")
        held.append(
            HeldAdapter(
                name=entry["name"],
                source=str(entry.get("source") or ""),
                revision=str(revision) if revision is not None else None,
                state=str(entry.get("state") or "loaded"),
                error=str(error) if error else None,
            )
        )
    return held


async def list_adapters(
    http: httpx.AsyncClient, target: AdminTarget, timeout_s: float = LIST_TIMEOUT_S
) -> list[HeldAdapter] | str:
    """What the replica holds, or why that is not known."""
    response = await _call(http, target, "GET", "/adapters", timeout_s)
    if isinstance(response, str):
        return response
    if response.status_code != 200:
        return f"pod {target.pod}: listing adapters: {_error_of(response)}"
    try:
        entries = response.json()["adapters"]
        if not isinstance(entries, list):
            raise TypeError("not a list")
        return _held(entries)
    except (ValueError, KeyError, TypeError) as exc:
        return f"pod {target.pod}: unreadable adapter list: {exc}"


async def load_adapter(
    http: httpx.AsyncClient,
    target: AdminTarget,
    name: str,
    source: str,
    revision: str,
    timeout_s: float = LOAD_TIMEOUT_S,
) -> str | None:
    """Load (or reload) `name` on the replica; None when loaded, else the error."""
    response = await _call(
        http, target, "PUT", f"/adapters/{quote(name, safe='')}", timeout_s,
        body={"source": source, "revision": revision},
    )  # fmt: skip
    if isinstance(response, str):
        return response
    if response.status_code != 200:
        return f"pod {target.pod}: {_error_of(response)}"
    return None


async def unload_adapter(
    http: httpx.AsyncClient,
    target: AdminTarget,
    name: str,
    timeout_s: float = UNLOAD_TIMEOUT_S,
) -> str | None:
    """Unload `name` from the replica; None when it is gone (or was never there)."""
    response = await _call(http, target, "DELETE", f"/adapters/{quote(name, safe='')}", timeout_s)
    if isinstance(response, str):
        return response
    if response.status_code not in (200, 204, 404):
        return f"pod {target.pod}: {_error_of(response)}"
    return None
