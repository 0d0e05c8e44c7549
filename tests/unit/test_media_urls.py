"""Media URLs in requests: none fetched unless engine.allowedMediaDomains names the host.

The rule is a pure function (`media_url_problem`); the front is driven with
the fake engine of test_front.py (it records what reaches the engine): a
refused URL is a 400 in the OpenAI envelope and never reaches the engine.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from modelplane.server.app import CHAT_PATH, FrontSettings, ModelServerApp
from modelplane.server.lifecycle import Lifecycle
from modelplane.server.media_urls import media_url_problem
from modelplane.server.metrics import ServerMetrics
from tests.unit.test_front import FakeEngine

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


async def post(front: ModelServerApp, body: dict[str, Any]) -> httpx.Response:
    transport = httpx.ASGITransport(front)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.post(CHAT_PATH, json=body)


def front_with(engine: FakeEngine, allowed: frozenset[str]) -> ModelServerApp:
    registry = CollectorRegistry()
    front = ModelServerApp(
        FrontSettings(served_model_name="m", allowed_media_hosts=allowed),
        Lifecycle(),
        ServerMetrics(registry),
        registry,
    )
    front.attach_engine(engine)
    front.lifecycle.mark_ready()
    return front


async def test_the_server_refuses_a_media_url_before_the_engine_sees_it() -> None:
    engine = FakeEngine()
    front = front_with(engine, NONE)
    response = await post(front, chat(image("http://10.0.0.7:8080/admin")))
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == 400
    assert "fetches no media URLs" in error["message"]
    assert engine.seen_bodies == []

    inline = await post(front, chat(image(PIXEL)))
    assert inline.status_code == 200 and len(engine.seen_bodies) == 1


async def test_a_listed_host_reaches_the_engine() -> None:
    engine = FakeEngine()
    front = front_with(engine, CDN)
    assert (await post(front, chat(image("https://images.example.com/a.png")))).status_code == 200
    assert (await post(front, chat(image("https://other.example/a.png")))).status_code == 400
    assert len(engine.seen_bodies) == 1
