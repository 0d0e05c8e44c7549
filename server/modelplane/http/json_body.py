"""Reading a request's JSON body the way a hostile client cannot break: one rule for the
model server and the gateway.

`json.loads` alone answers three hostile bodies wrongly: nesting deep enough
to exhaust the parser's recursion raises RecursionError (a 500 with a
traceback per request), bytes that are not UTF-8 raise a decode error that
says nothing a person can act on, and a string escape of a lone surrogate
(`"\\ud800"`) parses into a str that cannot be encoded again, so it breaks
whatever writes it out later (a metric label, a log line). `parse_json_body`
turns each (and a depth past `MAX_DEPTH`) into a `BodyProblem` whose message
is the sentence the client gets in a 400 in the OpenAI error envelope.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

# Deeper than any OpenAI request (a tool schema nests a handful of levels) and far
# below where the parser's recursion ends: refused before parsing.
MAX_DEPTH: Final = 64


@dataclass(frozen=True)
class BodyProblem:
    message: str


# A \uD800-\uDFFF escape: only a body with one can hold a surrogate (paired or not).
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")


def _too_deep(value: Any, limit: int) -> bool:
    """Whether containers nest deeper than `limit`, walked one level at a time (no
    recursion to exhaust)."""
    level = [value] if isinstance(value, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        level = [
            child
            for item in level
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, dict | list)
        ]
    return False


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def json_kind(value: Any) -> str:
    """What a client sent, as JSON names it: a short scalar's value, else its kind."""
    if value is None:
        return "null"
    if isinstance(value, bool | int | float):
        shown = json.dumps(value)
        return shown if len(shown) <= 40 else "a number"
    if isinstance(value, str):
        shown = json.dumps(value)
        return shown if len(shown) <= 40 else "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def not_an_object(payload: Any) -> BodyProblem | None:
    """The problem of a request body that parsed, but not into a JSON object."""
    if isinstance(payload, dict):
        return None
    return BodyProblem(f"the request body must be a JSON object (got {json_kind(payload)})")


def parse_json_body(body: bytes, *, max_depth: int = MAX_DEPTH) -> Any | BodyProblem:
    """The parsed body, or what is wrong with it in one sentence.

    The common body costs one C-speed parse: the depth is walked only when the body
    has more brackets than `max_depth`, the strings only when it has a surrogate escape.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        return BodyProblem(f"the request body is not valid UTF-8 (at byte {err.start})")
    too_deep = BodyProblem(f"the request body nests JSON deeper than {max_depth} levels")
    if not text.strip():
        return BodyProblem("the request body is empty; send a JSON object")
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as err:
        what = err.msg[:1].lower() + err.msg[1:]
        return BodyProblem(
            f"the request body is not valid JSON at line {err.lineno} column {err.colno}: {what}"
        )
    except RecursionError:  # deeper than the parser itself goes
        return too_deep
    if text.count("[") + text.count("{") > max_depth and _too_deep(payload, max_depth):
        return too_deep
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(payload):
        return BodyProblem(
            "the request body has a string with a lone UTF-16 surrogate escape (e.g. \\ud800), "
            "which is not a character"
        )
    return payload
