"""The conversation prefix a request is routed by, for prefix-affine balancing.

Turn N of a chat resends turns 1..N-1, so everything up to and including
the first user message is the same in every turn of one conversation: that
is the key. Shared system prompts still produce different keys for
different conversations, so they spread over replicas; each message's text
is capped so a huge prompt costs no more to hash than a small one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
MAX_CHARS = 1024


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content[:MAX_CHARS]
    if isinstance(content, list):  # content parts: keep the text ones
        texts = [p.get("text", "") for p in content if isinstance(p, dict)]
        return "".join(t for t in texts if isinstance(t, str))[:MAX_CHARS]
    return ""


def affinity_key(path: str, payload: Mapping[str, Any]) -> bytes | None:
    """Bytes identifying the conversation, or None when the request has no prefix."""
    if path == CHAT_PATH:
        messages = payload.get("messages")
        if not isinstance(messages, list):
            return None
        head: list[tuple[str, str]] = []
        for message in messages:
            if not isinstance(message, dict):
                return None
            role = str(message.get("role", ""))
            head.append((role, _text(message.get("content"))))
            if role == "user":
                break
        return json.dumps(head).encode() if head else None
    if path == COMPLETIONS_PATH:
        prompt = payload.get("prompt")
        if isinstance(prompt, list) and prompt:
            prompt = prompt[0] if not isinstance(prompt[0], int) else prompt
        if isinstance(prompt, str):
            return prompt[:MAX_CHARS].encode()
        if isinstance(prompt, list):  # token ids
            return json.dumps(prompt[:MAX_CHARS]).encode()
    return None
