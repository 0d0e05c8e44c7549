"""The one JSON body reader of the server and the gateway: hostile bodies become one sentence."""

from __future__ import annotations

import pytest

from modelplane.http.json_body import MAX_DEPTH, BodyProblem, parse_json_body


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "deeper than 64 levels"),
        (b'{"a": ' + b'{"b": ' * 5000 + b"1" + b"}" * 5001, "deeper than 64 levels"),
        (b'{"model": "\\udc00"}', "lone UTF-16 surrogate"),
        (b'{"\\ud800": 1}', "lone UTF-16 surrogate"),
        (b'{"model": "caf\xe9"}', "not valid UTF-8 (at byte 14)"),
        (b'{"model": ', "not valid JSON at line 1 column 11: expecting value"),
        (b"", "the request body is empty"),
        (b" \n", "the request body is empty"),
    ],
)
def test_hostile_bodies_become_one_sentence(body: bytes, says: str) -> None:
    problem = parse_json_body(body)
    assert isinstance(problem, BodyProblem) and says in problem.message


@pytest.mark.parametrize(
    "body",
    [
        b"[" * MAX_DEPTH + b"]" * MAX_DEPTH,  # exactly at the limit
        b'{"content": "' + b"[" * 1000 + b'"}',  # brackets inside a string are text
        b'{"content": "a \\" [[[[ \\\\"}',  # escaped quotes do not end the string early
        '{"content": "Ünïcödé 🐳 \\ud83d\\udc33"}'.encode(),  # a valid surrogate pair
    ],
)
def test_ordinary_bodies_parse(body: bytes) -> None:
    assert not isinstance(parse_json_body(body), BodyProblem)
