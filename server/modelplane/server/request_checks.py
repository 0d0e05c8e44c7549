"""Checks of a request's JSON that the engine does not make, or makes in a way a client
of Modelplane cannot act on: pure functions of the path and the parsed payload.

- A chat message's `role` must be one of OpenAI's. vLLM takes any string as a
  role (it has a catch-all message type for custom chat templates) and
  renders it into the prompt, so `"role": "wizard"` would be answered 200
  with whatever the model makes of it.
- Stored responses: vLLM keeps a stored response (the base of a
  `previous_response_id` follow-up, of retrieving, cancelling and background
  mode) in the memory of the one process that answered it. With several
  replicas behind a Service or the gateway, the follow-up lands on any of
  them, and a restart or scale-down loses them all, so Modelplane keeps no
  responses (vLLM's store stays off): a request that needs one is refused with
  a 400 that says to send the conversation as `input` instead. `store: true`,
  the official SDK's default, is accepted and served without storing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from modelplane.http.json_body import json_kind

CHAT_PATH: Final = "/v1/chat/completions"
RESPONSES_PATH: Final = "/v1/responses"
# The roles of OpenAI's chat messages (`function` is deprecated there, still accepted).
CHAT_ROLES: Final = ("system", "developer", "user", "assistant", "tool", "function")
# The roles of a message in a Responses request's `input` (tool results are items of
# their own type there, not messages).
INPUT_ROLES: Final = ("system", "developer", "user", "assistant")

NOT_STORED: Final = (
    "Modelplane does not keep responses (a model's replicas share no memory, and any "
    "of them may answer a request)"
)
SEND_THE_CONVERSATION: Final = (
    "to continue a conversation, send its earlier turns in `input` (a list of messages)"
)


@dataclass(frozen=True)
class RequestProblem:
    """Why a request is refused: the sentence the client reads, the `param` it concerns,
    and the HTTP status (400 unless said)."""

    message: str
    param: str | None = None
    status: int = 400


def role_problem(
    payload: dict[str, Any], field: str, roles: tuple[str, ...]
) -> RequestProblem | None:
    """The first message of `payload[field]` whose role is not one of `roles` (a missing
    or malformed role is left to the engine's validation, which names it)."""
    messages = payload.get(field)
    if not isinstance(messages, list):
        return None
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if isinstance(role, str) and role not in roles:
            choices = ", ".join(f"'{r}'" for r in roles)
            param = f"{field}[{index}].role"
            return RequestProblem(
                f"{param} must be one of {choices} (got {json_kind(role)})", param
            )
    return None


def stored_response_problem(payload: dict[str, Any]) -> RequestProblem | None:
    """A Responses request that needs a stored response: a follow-up by id, or background
    mode (whose result is fetched later by id)."""
    previous = payload.get("previous_response_id")
    if previous is not None:
        return RequestProblem(
            f"previous_response_id cannot be used: {NOT_STORED}; {SEND_THE_CONVERSATION}",
            "previous_response_id",
        )
    if payload.get("background") is True:
        return RequestProblem(
            f"background cannot be used: {NOT_STORED}, so a response cannot be fetched "
            "later; send the request without it (with stream: true to see the output as "
            "it comes)",
            "background",
        )
    return None


def stored_response_route_problem(method: str, path: str) -> RequestProblem | None:
    """A request for a stored response (`GET` or `DELETE /v1/responses/{id}`, its
    `/cancel` or `/input_items`): none exists here, so a 404 that says why."""
    if not path.startswith(RESPONSES_PATH + "/"):
        return None
    return RequestProblem(
        f"no stored response at {method} {path}: {NOT_STORED}; {SEND_THE_CONVERSATION} "
        "of a new request",
        "response_id",
        404,
    )


def request_problem(path: str, payload: dict[str, Any]) -> RequestProblem | None:
    """What Modelplane refuses in this request before the engine sees it."""
    if path == CHAT_PATH:
        return role_problem(payload, "messages", CHAT_ROLES)
    if path == RESPONSES_PATH:
        return stored_response_problem(payload) or role_problem(payload, "input", INPUT_ROLES)
    return None
