"""A fast stand-in for a model server, to measure what a proxy in front of it costs.

Raw asyncio on uvloop with just enough HTTP/1.1 (keep-alive, content-length
bodies, chunked responses): it answers `GET /ready`, and for
`POST /v1/chat/completions` or `/v1/completions` either one small JSON
completion or, with `"stream": true`, an SSE stream of `max_tokens` events
(default 16), each written separately with a loop turn in between, ending
with `data: [DONE]`. No model, no tokenizer: everything it spends is far
below what either proxy spends, so the proxy is what gets measured.

    python bench/stub_upstream.py --port 9101
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
from typing import cast

_CHUNK = (
    b'data: {"id":"stub","object":"chat.completion.chunk","model":"stub",'
    b'"choices":[{"index":0,"delta":{"content":"tok "},"finish_reason":null}]}\n\n'
)
_DONE = b"data: [DONE]\n\n"
_JSON = json.dumps(
    {
        "id": "stub",
        "object": "chat.completion",
        "model": "stub",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 8, "completion_tokens": 1, "total_tokens": 9},
    }
).encode()
_MAX_TOKENS = re.compile(rb'"max_tokens"\s*:\s*(\d+)')
_STREAM = re.compile(rb'"stream"\s*:\s*true')


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class StubProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.queue: asyncio.Queue[tuple[bytes, bytes]] = asyncio.Queue()
        self.worker: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.worker = asyncio.ensure_future(self._serve())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.worker is not None:
            self.worker.cancel()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            self.queue.put_nowait((head.split(b"\r\n", 1)[0], body))

    async def _serve(self) -> None:
        # Requests on one connection are answered in order (HTTP/1.1 pipelining rules).
        transport = self.transport
        assert transport is not None
        while True:
            request_line, body = await self.queue.get()
            method = request_line.split(b" ", 1)[0]
            if method == b"GET":
                payload = b'{"status": "ready"}'
                transport.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(payload), payload)
                )
                continue
            if not _STREAM.search(body):
                transport.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(_JSON), _JSON)
                )
                continue
            match = _MAX_TOKENS.search(body)
            events = int(match.group(1)) if match else 16
            transport.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
            )
            for _ in range(events):
                await asyncio.sleep(0)  # one event per write, as a token-by-token server does
                transport.write(_chunked(_CHUNK))
            transport.write(_chunked(_DONE) + b"0\r\n\r\n")


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(StubProtocol, host, port, backlog=4096, reuse_port=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
