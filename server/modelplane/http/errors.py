"""The OpenAI error envelope, and sending it from plain ASGI code.

Every error our production layer produces goes through `send_error`, so
clients see one shape: `{"error": {"message", "type", "param", "code"}}`,
with `type` from one vocabulary (`ERROR_TYPES`, by HTTP status) and `code`
the HTTP status. Errors someone else wrote (the engine: vLLM's types are
`"Bad Request"` or `"BadRequestError"`, FastAPI's are `{"detail": ...}`) are
rewritten into the same shape by `rewrite_error_body` and
`rewrite_error_event`, keeping their message and `param`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any, Final

from modelplane.http.asgi import Send

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
    503: "service_unavailable",
    504: "timeout_error",
}

# An SSE event carrying an error, as vLLM writes one into a stream.
_ERROR_EVENT: Final = b'data: {"error"'
# vLLM's VLLMValidationError appends what `param` (and its message) already say:
# "... got -1. (parameter=max_tokens, value=-1)".
_PARAMETER_SUFFIX: Final = re.compile(r" \(parameter=(?P<name>[^,()]*)(, value=[^()]*)?\)$")


def error_type(status: int) -> str:
    """The OpenAI `type` for an HTTP status: one vocabulary for every error we send."""
    if status in ERROR_TYPES:
        return ERROR_TYPES[status]
    return "invalid_request_error" if 400 <= status < 500 else "server_error"


def error_body(
    status: int,
    message: str,
    *,
    param: str | None = None,
    type_: str | None = None,
    code: str | None = None,
) -> bytes:
    """The JSON body of an OpenAI-style error for this HTTP status. `type_` and `code`
    replace the status's own where OpenAI's clients look for a specific pair (a spent
    quota is `insufficient_quota` in both)."""
    payload = {
        "error": {
            "message": message,
            "type": type_ or error_type(status),
            "param": param,
            "code": code if code is not None else status,
        }
    }
    return json.dumps(payload).encode()


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower()
    except ValueError:
        return f"HTTP {status}"


def _message_and_param(
    payload: Any, status: int, params: Mapping[str, str] | None = None
) -> tuple[str, str | None]:
    """What an error body someone else wrote says, and the parameter it names (renamed
    by `params`, e.g. the engine's `input_tokens` to the request's `messages`)."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        message, param = error.get("message"), error.get("param")
    elif isinstance(error, str):
        message, param = error, None
    elif isinstance(payload, dict) and isinstance(payload.get("detail"), str):
        message, param = payload["detail"], None  # FastAPI's HTTPException
    else:
        message, param = None, None
    if not isinstance(message, str) or not message.strip():
        message = _phrase(status)
    if not isinstance(param, str) or not param:
        param = None
    suffix = _PARAMETER_SUFFIX.search(message)
    if suffix is not None and suffix["name"] == param:
        message = message[: suffix.start()]
    if param is not None and params:
        param = params.get(param, param)
    return message, param


def rewrite_error_body(status: int, body: bytes, params: Mapping[str, str] | None = None) -> bytes:
    """An error response body another component wrote, in our envelope: its message and
    `param` kept (renamed by `params`), `type` and `code` from the status. A body that is
    not JSON becomes its text as the message (or the status's phrase)."""
    try:
        payload = json.loads(body)
    except ValueError:
        text = body.decode("utf-8", "replace").strip()
        return error_body(status, text[:1000] or _phrase(status))
    message, param = _message_and_param(payload, status, params)
    return error_body(status, message, param=param)


def rewrite_error_event(chunk: bytes, params: Mapping[str, str] | None = None) -> bytes:
    """A stream chunk holding one error event (`data: {"error": ...}`) in our envelope;
    any other chunk unchanged. The error's `code` decides its type, as a status would."""
    if not chunk.startswith(_ERROR_EVENT):
        return chunk
    data, separator, rest = chunk.partition(b"\n\n")
    try:
        payload = json.loads(data.removeprefix(b"data: "))
    except ValueError:
        return chunk
    error = payload.get("error") if isinstance(payload, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    status = code if isinstance(code, int) and 400 <= code <= 599 else 500
    message, param = _message_and_param(payload, status, params)
    return b"data: " + error_body(status, message, param=param) + separator + rest


async def send_json(
    send: Send,
    status: int,
    body: bytes,
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def send_error(
    send: Send,
    status: int,
    message: str,
    *,
    param: str | None = None,
    retry_after: int | None = None,
    close: bool = False,
    type_: str | None = None,
    code: str | None = None,
) -> None:
    """Send the envelope; `close` also ends the connection after it (the request's
    body may be half read, so the connection cannot carry another request)."""
    headers: list[tuple[bytes, bytes]] = []
    if close:
        headers.append((b"connection", b"close"))
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    body = error_body(status, message, param=param, type_=type_, code=code)
    await send_json(send, status, body, headers)
