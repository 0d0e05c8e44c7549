"""What a running gateway shows its clients: no replica addresses, and no metrics on the API port.

`modelplane gateway` runs as a process with static discovery, in front of
stub replicas that fail on command (refused connections, silence past the
read timeout, a 500, bytes that are not HTTP, a stream cut half way, a
redirect, a replica that never turns ready). The stubs are small servers
in the test's event loop (tests/unit/gateway/conftest.py): those failures
are what is tested, and a real model server cannot produce them on demand.
Every answer a client gets must be free of any replica's host:port; the
replicas' addresses stay in the log and on the metrics port, where the
series of a replica that left discovery are removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.integration.gateway.conftest import GatewayProcess, metric_sum
from tests.unit.gateway.conftest import StubReplica

CHAT = "/v1/chat/completions"
ADDRESS = re.compile(r"\d{1,3}(\.\d{1,3}){3}(:\d+)?|localhost|\[[0-9a-f:]+\]")


def chat(model: str, stream: bool = False) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}


class NotHttpReplica:
    """Answers `/ready` as a server would, and every other request with bytes that are not
    HTTP (and that carry its own address, which an error message must not echo)."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> NotHttpReplica:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request_line = await reader.readline()
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        await reader.readexactly(length)
        if request_line.startswith(b"GET /ready "):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        else:
            writer.write(f"SSH-2.0-replica-at-{self.url}\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def stubs() -> AsyncIterator[dict[str, StubReplica]]:
    modes = {
        "ok": "ok",
        "refused": "ok",  # stopped once the gateway has seen it ready
        "silent": "silent",
        "failing": "fail",
        "broken": "broken-stream",
        "redirecting": "redirect",
        "starting": "draining",  # never ready: its requests are held, then 503
    }
    started = {name: await StubReplica(name, mode).start() for name, mode in modes.items()}
    started["redirecting"].redirect_to = started["ok"].url
    yield started
    for stub in started.values():
        stub.release.set()
        await stub.stop()


def write_config(path: Path, models: dict[str, list[str]]) -> Path:
    lines = ["models:"]
    for name, urls in models.items():
        lines += [f"  {name}:", f"    upstreams: [{', '.join(urls)}]"]
    path.write_text("\n".join(lines) + "\n")
    return path


@contextlib.asynccontextmanager
async def running(gateway: GatewayProcess) -> AsyncIterator[GatewayProcess]:
    gateway.start()
    try:
        yield await gateway.wait_synced_async()
    finally:
        await asyncio.to_thread(gateway.stop)


def addresses_in(text: str) -> list[str]:
    return [m.group(0) for m in ADDRESS.finditer(text)]


async def test_no_error_a_client_gets_names_a_replica_and_metrics_are_not_on_the_api_port(
    tmp_path: Path, stubs: dict[str, StubReplica]
) -> None:
    not_http = await NotHttpReplica().start()
    config = write_config(
        tmp_path / "gateway.yaml",
        {name: [stub.url] for name, stub in stubs.items()} | {"not-http": [not_http.url]},
    )
    gateway = GatewayProcess.with_args(
        tmp_path, "gateway", "--config", str(config), "--health-interval", "600",
        "--read-timeout", "1", "--hold-timeout", "1", "--connect-timeout", "1",
    )  # fmt: skip
    try:
        async with running(gateway), httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            await stubs["refused"].stop()  # gone since the gateway last looked
            answers = {
                name: await client.post(CHAT, json=chat(name))
                for name in ("refused", "silent", "failing", "not-http", "redirecting", "starting")
            }
            answers["unknown"] = await client.post(CHAT, json=chat("gpt-9"))
            answers["broken"] = await client.post(CHAT, json=chat("broken", stream=True))
            served = await client.post(CHAT, json=chat("ok"))
            public_metrics = await client.get("/metrics")
            scrape = (await client.get(gateway.metrics_url)).text
    finally:
        await not_http.stop()

    statuses = {name: r.status_code for name, r in answers.items()}
    assert statuses == {
        "refused": 502,
        "silent": 504,
        "failing": 500,  # the replica's own error passes through
        "not-http": 502,
        "redirecting": 502,
        "starting": 503,
        "unknown": 404,
        "broken": 200,  # the stream had begun: it ends with an error event
    }, {name: r.text for name, r in answers.items()}
    for name, response in answers.items():
        assert addresses_in(response.text) == [], (name, response.text)
        if name != "broken":
            error = response.json()["error"]
            assert error["message"] and error["type"], (name, response.text)
    assert "the replica's stream broke" in answers["broken"].text
    assert "could not reach a replica of model 'refused'" in answers["refused"].text
    assert "did not answer within 1s" in answers["silent"].text
    # The gateway's own log keeps the addresses, for the people who run it.
    assert stubs["refused"].url in gateway.log()

    assert served.status_code == 200
    assert public_metrics.status_code == 404
    upstream = stubs["ok"].url
    assert metric_sum(scrape, "modelplane_gateway_requests_total", upstream=upstream) == 1


async def test_a_replica_that_leaves_discovery_takes_its_series_with_it(
    tmp_path: Path, stubs: dict[str, StubReplica]
) -> None:
    a, b = stubs["ok"], stubs["failing"]
    config = write_config(tmp_path / "gateway.yaml", {"m": [a.url, b.url]})
    gateway = GatewayProcess.with_args(
        tmp_path, "gateway", "--config", str(config), "--health-interval", "0.1"
    )
    async with running(gateway), httpx.AsyncClient(timeout=30) as client:
        for _ in range(4):  # least-load takes turns: two each
            await client.post(f"{gateway.url}{CHAT}", json=chat("m"))

        async def series_of(upstream: str) -> list[str]:
            text = (await client.get(gateway.metrics_url)).text
            return [line for line in text.splitlines() if f'upstream="{upstream}"' in line]

        before = await series_of(b.url)
        names = {line.split("{")[0] for line in before}
        assert {
            "modelplane_gateway_requests_total",
            "modelplane_gateway_upstream_in_flight",
            "modelplane_gateway_ejections_total",
        } <= names, before

        write_config(config, {"m": [a.url]})  # the replica goes away
        os.utime(config, (1, 1))
        async with asyncio.timeout(20):
            while await series_of(b.url):  # noqa: ASYNC110 - polling the scrape
                await asyncio.sleep(0.1)
        assert await series_of(a.url)  # the replica still there keeps its series
