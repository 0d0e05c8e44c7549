"""Counting model tokens of a response cheaply, for tokens-per-minute limits.

Only used when a tokens-per-minute limit is configured. The exact count is
the `usage` object: in a plain JSON response always, in a stream when the
client asked for `stream_options.include_usage`. Otherwise a stream is
counted by its events (vLLM sends about one token per event) and the
prompt by its size (about four bytes per token): an estimate, but one that
costs a byte scan per chunk instead of a JSON parse.
"""

from __future__ import annotations

import json

_EVENT = b"data: "
_USAGE = b'"usage"'
BYTES_PER_PROMPT_TOKEN = 4
MAX_JSON_BYTES = 1 << 20


class TokenTally:
    def __init__(self, request_bytes: int, streaming: bool) -> None:
        self._request_bytes = request_bytes
        self._streaming = streaming
        self._events = 0
        self._usage_chunk: bytes | None = None
        self._body: list[bytes] = []
        self._body_size = 0

    def feed(self, chunk: bytes) -> None:
        if self._streaming:
            self._events += chunk.count(_EVENT)
            if _USAGE in chunk:
                self._usage_chunk = chunk
        elif self._body_size < MAX_JSON_BYTES:
            self._body.append(chunk)
            self._body_size += len(chunk)

    def total(self) -> int:
        usage = self._usage()
        if usage is not None:
            return usage
        estimate_prompt = self._request_bytes // BYTES_PER_PROMPT_TOKEN
        # Minus the closing `data: [DONE]` event.
        return estimate_prompt + max(0, self._events - 1)

    def _usage(self) -> int | None:
        if self._streaming:
            if self._usage_chunk is None:
                return None
            for line in self._usage_chunk.split(b"\n"):
                if line.startswith(_EVENT) and _USAGE in line:
                    return _total_tokens(line[len(_EVENT) :])
            return None
        return _total_tokens(b"".join(self._body))


def _total_tokens(raw: bytes) -> int | None:
    try:
        usage = json.loads(raw).get("usage") or {}
    except (ValueError, AttributeError):
        return None
    total = usage.get("total_tokens") if isinstance(usage, dict) else None
    return int(total) if isinstance(total, int) else None
