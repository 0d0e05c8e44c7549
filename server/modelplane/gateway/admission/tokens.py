"""Counting model tokens, for tokens-per-minute limits: what a request may use
(`reservation`, taken at admission) and what its response used (`TokenTally`).

Only used when a tokens-per-minute limit is configured.

The exact count is the response's `usage` object: in a plain JSON response at
its end (after the choices, so a large answer puts it megabytes in), in a
stream in the last event when the client asked for
`stream_options.include_usage` (or in every event, cumulative, with vLLM's
continuous usage stats); a Responses API stream always carries it, in its
`response.completed` event (`input_tokens` and `output_tokens`). The tally
finds it wherever it is without keeping the body: it scans each chunk for the
bytes `"usage"` followed by `:` and an object (a key inside a JSON string has
its quotes escaped, so only a real key matches), keeps at most
`MAX_USAGE_BYTES` from there, and parses that slice; the last usage object
found wins. Without one, a stream is counted by its events (vLLM sends about
one token per event) and the prompt by its size (about four bytes per token):
an estimate, but one that costs a byte scan per chunk instead of a JSON parse.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

_EVENT = b"data: "
_KEY = b'"usage"'
_VALUE_START = re.compile(rb'"usage"\s*:\s*')
BYTES_PER_PROMPT_TOKEN: Final = 4
# A usage object with its token details is a few hundred bytes.
MAX_USAGE_BYTES: Final = 4096
# Reserved for the answer when the request states no `max_tokens` (the engine's
# own bound is the context length, which would make every such request reserve
# the whole budget); the settlement charges the real use either way.
DEFAULT_COMPLETION_TOKENS: Final = 512
# Routes that generate nothing: their tokens are the input's.
POOLING_PATHS: Final = frozenset(
    {"/v1/embeddings", "/v1/score", "/v1/rerank", "/score", "/rerank", "/v2/rerank"}
)
# What bounds the answer: Chat Completions' names, then the Responses API's.
_OUTPUT_LIMITS: Final = ("max_completion_tokens", "max_tokens", "max_output_tokens")


def reservation(path: str, payload: Mapping[str, Any], body_bytes: int) -> int:
    """Tokens a request may use: its prompt's estimate plus what it may generate."""
    prompt = body_bytes // BYTES_PER_PROMPT_TOKEN
    if path in POOLING_PATHS:
        return prompt
    limit = next((payload[k] for k in _OUTPUT_LIMITS if payload.get(k) is not None), None)
    completion = limit if isinstance(limit, int) and limit > 0 else DEFAULT_COMPLETION_TOKENS
    n = payload.get("n")
    choices = n if isinstance(n, int) and 0 < n <= 128 else 1
    return prompt + completion * choices


class _UsageScanner:
    """The last `"usage": {...}` object of a byte stream, found chunk by chunk."""

    def __init__(self) -> None:
        self._carry = b""  # the previous chunk's tail, for a key split across chunks
        self._capture: bytearray | None = None  # bytes from the latest key on
        self.found: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> None:
        if self._capture is not None:
            self._capture += chunk[: MAX_USAGE_BYTES - len(self._capture)]
            self._try_parse(final=len(self._capture) >= MAX_USAGE_BYTES)
        # Keys wholly inside the chunk, and one begun in the carry and ended in the chunk
        # (the carry is one byte short of a key, so none is found twice).
        head = self._carry + chunk[: len(_KEY) - 1]
        if _KEY in chunk or _KEY in head:
            window = self._carry + chunk
            at = window.find(_KEY)
            while at >= 0:
                self._capture = bytearray(window[at : at + MAX_USAGE_BYTES])
                self._try_parse(final=len(self._capture) >= MAX_USAGE_BYTES)
                at = window.find(_KEY, at + 1)
        self._carry = (self._carry + chunk)[-(len(_KEY) - 1) :]

    def finish(self) -> None:
        if self._capture is not None:
            self._try_parse(final=True)

    def _try_parse(self, *, final: bool) -> None:
        """Parse the capture; keep it for more bytes unless it is complete or `final`."""
        assert self._capture is not None
        start = _VALUE_START.match(self._capture)
        if start is None:
            if final or len(self._capture) > len(_KEY) + 64:
                self._capture = None  # "usage" not followed by ':' (a value, not a key)
            return
        text = self._capture[start.end() :].decode("utf-8", "replace")
        try:
            value, _ = json.JSONDecoder().raw_decode(text)
        except ValueError:
            if final:
                self._capture = None
            return  # incomplete: the rest is in the next chunk
        self._capture = None
        if isinstance(value, dict) and _total(value) is not None:
            self.found = value


def _total(usage: Mapping[str, Any]) -> int | None:
    total = usage.get("total_tokens")
    if isinstance(total, int) and not isinstance(total, bool):
        return total
    for prompt_key, completion_key in (
        ("prompt_tokens", "completion_tokens"),
        ("input_tokens", "output_tokens"),  # the Responses API's usage
    ):
        prompt, completion = usage.get(prompt_key), usage.get(completion_key)
        if isinstance(prompt, int) and isinstance(completion, int):
            return prompt + completion
    return None


class TokenTally:
    def __init__(self, request_bytes: int, streaming: bool) -> None:
        self._request_bytes = request_bytes
        self._streaming = streaming
        self._events = 0
        self._usage = _UsageScanner()

    def feed(self, chunk: bytes) -> None:
        if self._streaming:
            self._events += chunk.count(_EVENT)
        self._usage.feed(chunk)

    def usage(self) -> int | None:
        """The tokens the response's own `usage` reports, if it has one."""
        self._usage.finish()
        found = self._usage.found
        return _total(found) if found is not None else None

    def split(self) -> tuple[int, int]:
        """(prompt, completion) tokens: the response's `usage` (Chat Completions' or the
        Responses API's names) when it has both, else the estimate `total` makes."""
        self._usage.finish()
        found = self._usage.found or {}
        prompt: object = found.get("prompt_tokens", found.get("input_tokens"))
        completion: object = found.get("completion_tokens", found.get("output_tokens", 0))
        if (
            isinstance(prompt, int)
            and isinstance(completion, int)
            and not isinstance(prompt, bool)
            and not isinstance(completion, bool)
            and min(prompt, completion) >= 0
        ):
            return prompt, completion
        return self._request_bytes // BYTES_PER_PROMPT_TOKEN, max(0, self._events - 1)

    def total(self) -> int:
        usage = self.usage()
        if usage is not None:
            return usage
        estimate_prompt = self._request_bytes // BYTES_PER_PROMPT_TOKEN
        # Minus the closing `data: [DONE]` event.
        return estimate_prompt + max(0, self._events - 1)
