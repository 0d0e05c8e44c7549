"""Media URLs in requests: none fetched unless engine.allowedMediaDomains names the host.

The rule is a pure function (`media_url_problem`), applied by the server's
front before the engine sees a request.
"""

from __future__ import annotations

from typing import Any

import pytest

from modelplane.server.media_urls import media_url_problem

PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB"
    "0C8AAAAASUVORK5CYII="
)


def chat(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": list(parts)}]}


def image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


NONE: frozenset[str] = frozenset()
CDN = frozenset({"images.example.com"})


@pytest.mark.parametrize(
    ("payload", "allowed", "refused"),
    [
        (chat(image("http://169.254.169.254/latest/meta-data/")), NONE, "fetches no media URLs"),
        (chat(image("HTTPS://images.example.com/a.png")), NONE, "allowedMediaDomains is empty"),
        (chat({"type": "audio_url", "audio_url": {"url": "https://x.example/a.wav"}}), NONE,
         "audio_url"),
        (chat({"type": "video_url", "video_url": "https://x.example/v.mp4"}), NONE, "video_url"),
        (chat({"type": "input_image", "image_url": "https://x.example/i.png"}), NONE, "image_url"),
        (chat({"image_url": {"url": "https://x.example/i.png"}}), NONE, "image_url"),  # no type
        (chat(image("file:///etc/passwd")), CDN, "must be http(s) URLs"),
        (chat(image("https://evil.example/a.png")), CDN, "images.example.com"),
        (chat(image("https://images.example.com@evil.example/a.png")), CDN, "must be"),
        (chat(image("https://evil.example\\@images.example.com/a.png")), CDN, "must be"),
        (chat(image("gopher://images.example.com/")), CDN, "must be"),
        (chat(image(" https://evil.example/")), CDN, "must be"),
    ],
)  # fmt: skip
def test_a_media_url_the_engine_may_not_fetch_is_named(
    payload: dict[str, Any], allowed: frozenset[str], refused: str
) -> None:
    problem = media_url_problem(payload, allowed)
    assert problem is not None and refused in problem, problem


@pytest.mark.parametrize(
    ("payload", "allowed"),
    [
        (chat(image(PIXEL)), NONE),
        (chat(image("DATA:image/png;base64,AAAA")), NONE),
        (chat(image("https://images.example.com/cat.png")), CDN),
        (chat(image("https://IMAGES.example.com:443/cat.png")), CDN),
        (chat({"type": "text", "text": "what is at https://evil.example/?"}), NONE),
        ({"model": "m", "messages": [{"role": "user", "content": "https://evil.example/"}]}, NONE),
        ({"model": "m", "prompt": "https://evil.example/"}, NONE),
        ({"messages": "not a list"}, NONE),
        ([1, 2], NONE),
    ],
)
def test_inline_media_allowed_hosts_and_text_pass(payload: Any, allowed: frozenset[str]) -> None:
    assert media_url_problem(payload, allowed) is None
