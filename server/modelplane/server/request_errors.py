"""Sentences for requests the engine's request models refuse.

vLLM validates each request body against its pydantic models and answers a
failure with the errors' Python repr (`1 validation error:\n {'type':
'missing', 'loc': 'body.messages', ...}`). `describe_validation_errors`
turns the same errors into what a person reads -- `messages is required`,
`max_tokens must be an integer (got "ten")` -- and the OpenAI `param` they
concern (`messages[0].role`). A pure function of the errors, so it is tested
without an engine; `vllm_engine` installs it as the engine app's handler.

A field with several accepted shapes (a union: `stop` is a string or an array,
a message is one of six roles) fails once per shape; those errors are folded
into one sentence naming the shapes, and errors from the alternatives of a
union are not reported as separate problems.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from modelplane.http.json_body import json_kind

# Most problems one answer names; more are counted.
MAX_REPORTED: Final = 3

# What pydantic's type errors ask for, as the JSON a client writes.
_EXPECTED: Final = {
    "string_type": "a string",
    "string_unicode": "a string",
    "list_type": "an array",
    "tuple_type": "an array",
    "set_type": "an array",
    "iterable_type": "an array",
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "float_parsing": "a number",
    "decimal_type": "a number",
    "bool_type": "a boolean",
    "bool_parsing": "a boolean",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "typed_dict_type": "an object",
    "none_required": "null",
}

# Parts of a pydantic location that are not fields: validator wrappers
# ("function-wrap[...]"), the branch of a union ("str", "list[str]",
# "ChatCompletionUserMessageParam"), and pydantic's own schema kinds.
_WRAPPER: Final = re.compile(r"[\[\](){}-]")
_SCHEMA_KINDS: Final = frozenset(
    {"str", "int", "float", "bool", "bytes", "list", "tuple", "dict", "set", "frozenset",
     "none", "nullable", "union", "chain", "default", "lax-or-strict", "json-or-python"}
)  # fmt: skip


def _is_field(part: str | int) -> bool:
    if isinstance(part, int):
        return True
    return not (_WRAPPER.search(part) or part in _SCHEMA_KINDS or part[:1].isupper())


def param_of(loc: Sequence[str | int]) -> tuple[str, bool]:
    """The parameter a location names (`messages[0].content`; "" for the whole body),
    and whether it passed through the branch of a union."""
    parts = list(loc[1:] if loc and loc[0] == "body" else loc)
    fields = [p for p in parts if _is_field(p)]
    text = ""
    for part in fields:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text, len(fields) != len(parts)


def _alternatives(errors: Sequence[Mapping[str, Any]]) -> list[str]:
    wanted: list[str] = []
    for error in errors:
        kind = str(error.get("type", ""))
        if kind == "literal_error" or kind == "enum":
            expected = str((error.get("ctx") or {}).get("expected", "")).replace(" or ", ", ")
            choices = [c.strip() for c in expected.split(",") if c.strip()]
        else:
            choices = [_EXPECTED[kind]] if kind in _EXPECTED else []
        wanted += [c for c in choices if c not in wanted]
    return wanted


def _one_of(choices: list[str]) -> str:
    if len(choices) == 1:
        return choices[0]
    if all(c.startswith(("'", '"')) for c in choices):
        return "one of " + ", ".join(choices)
    return ", ".join(choices[:-1]) + " or " + choices[-1]


def _engine_error(error: Mapping[str, Any]) -> tuple[str, str | None] | None:
    """A sentence the engine's own validator wrote, with the parameter it names."""
    raised = (error.get("ctx") or {}).get("error")
    parameter = getattr(raised, "parameter", None)
    if raised is None or not isinstance(parameter, str):
        return None
    message = str(raised.args[0]) if getattr(raised, "args", None) else str(raised)
    return message, parameter


def _sentence(param: str, errors: Sequence[Mapping[str, Any]]) -> str:
    first = errors[0]
    kind = str(first.get("type", ""))
    given = json_kind(first.get("input"))
    if not param:
        if kind == "missing":
            return "the request body is empty; send a JSON object"
        return f"the request body must be a JSON object (got {given})"
    if any(e.get("type") == "missing" for e in errors) and len(errors) == 1:
        return f"{param} is required"
    wanted = _alternatives(errors)
    if wanted and all(
        e.get("type") in _EXPECTED or e.get("type") in ("literal_error", "enum") for e in errors
    ):
        return f"{param} must be {_one_of(wanted)} (got {given})"
    message = str(first.get("msg", "is not valid")).removeprefix("Value error, ")
    if message.startswith("Input should "):
        return f"{param} must {message.removeprefix('Input should ')} (got {given})"
    if message == "Field required":
        return f"{param} is required"
    return f"{param}: {message}"


def _has_nested(param: str, params: set[str]) -> bool:
    """Whether an alternative of a union failed inside `param`'s value: pydantic only
    looks inside a value of the shape that alternative takes (`input` sent as an array
    fails as "not a string" and in `input[0]`), so the problem is in there, not that the
    value is not a string."""
    return any(p.startswith((param + "[", param + ".")) for p in params)


def describe_validation_errors(errors: Sequence[Any]) -> tuple[str, str | None]:
    """One message a person reads for a refused request, and the `param` it concerns
    (the first problem's)."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    through_union: set[str] = set()
    for error in errors:
        if not isinstance(error, Mapping):
            text = str(error)
            if "Unsupported Media Type" in text:
                return "send the request body as JSON, with 'Content-Type: application/json'", None
            return text, None
        engine = _engine_error(error)
        if engine is not None:
            return engine
        param, in_union = param_of(tuple(error.get("loc", ())))
        groups.setdefault(param, []).append(error)
        if in_union:
            through_union.add(param)
    if not groups:
        return "the request is not valid", None
    reported: list[str] = []
    union_seen = False
    for param in groups:
        if param in through_union:
            if union_seen or _has_nested(param, through_union):
                continue  # another alternative of the same union, not another problem
            union_seen = True
        reported.append(param)
    sentences = [_sentence(p, groups[p]) for p in reported[:MAX_REPORTED]]
    more = len(reported) - MAX_REPORTED
    message = "; ".join(sentences)
    if more > 0:
        message += f"; and {more} more problem{'s' if more > 1 else ''}"
    first = reported[0]
    return message, first or None
