"""Which media URLs a request may make the engine fetch: none, unless the spec names hosts.

A multimodal model fetches the `image_url`, `audio_url`, `video_url` (and
Responses-style `input_image`) parts of chat messages itself, from the pod:
a request could make it read the cluster's services or the cloud's metadata
endpoint. vLLM's `--allowed-media-domains` limits the hosts, but an empty
list means any host to vLLM, so the default of "none" is kept here, before
the engine sees the request: `media_url_problem` finds the first URL that
is not a `data:` URL (the media inline) or an http(s) URL of an allowed host,
and the server answers it with a 400. With hosts listed, vLLM checks them as
well (with its own URL parser), so a URL passes only when both agree.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final
from urllib.parse import urlsplit

# Content-part fields whose value is a URL (a string, or {"url": ...}), as vLLM reads them.
MEDIA_FIELDS: Final = ("image_url", "audio_url", "video_url")


def _media_urls(payload: Any) -> Iterator[tuple[str, str]]:
    """(field, URL) of every media part of every message: chat's `messages`, and the
    Responses API's `input` when it is a list of messages."""
    if not isinstance(payload, dict):
        return
    for key in ("messages", "input"):
        messages = payload.get(key)
        if isinstance(messages, list):
            yield from _message_media_urls(messages)


def _message_media_urls(messages: list[Any]) -> Iterator[tuple[str, str]]:
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if not isinstance(part, dict):
                continue
            for field in MEDIA_FIELDS:
                value = part.get(field)
                url = value.get("url") if isinstance(value, dict) else value
                if isinstance(url, str):
                    yield field, url


def _host(url: str) -> str | None:
    """The host of an http(s) URL, or None when it is not one or is ambiguous (user info
    or backslashes, which URL parsers disagree about)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or "@" in parts.netloc:
        return None
    if "\\" in url or any(ord(c) < 0x21 for c in url):
        return None
    return parts.hostname


def media_url_problem(payload: Any, allowed_hosts: frozenset[str]) -> str | None:
    """Why the request's media URLs may not be fetched, or None when they all may."""
    for field, url in _media_urls(payload):
        text = url.strip()
        if text[:5].lower() == "data:":
            continue
        host = _host(text)
        if host is not None and host in allowed_hosts:
            continue
        shown = text if len(text) <= 80 else text[:77] + "..."
        if not allowed_hosts:
            return (
                f"{field} {shown!r}: this model fetches no media URLs; send the media "
                "inline as a data: URL (the model's engine.allowedMediaDomains is empty)"
            )
        return (
            f"{field} {shown!r}: media URLs must be http(s) URLs of the model's "
            f"engine.allowedMediaDomains ({', '.join(sorted(allowed_hosts))}), or data: URLs"
        )
    return None
