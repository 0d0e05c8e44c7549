"""The OpenAI error envelope, and sending it from plain ASGI code.

Every error our production layer produces goes through `send_error`, so
clients see one shape: `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from modelplane.http.asgi import Send

ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "service_unavailable",
}


def error_body(status: int, message: str, *, param: str | None = None) -> bytes:
    """The JSON body of an OpenAI-style error for this HTTP status."""
    payload = {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(status, "server_error"),
            "param": param,
            "code": status,
        }
    }
    return json.dumps(payload).encode()


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
    await send_json(send, status, error_body(status, message, param=param), headers)
