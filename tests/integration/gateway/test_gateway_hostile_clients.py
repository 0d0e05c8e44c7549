"""`modelplane gateway` against clients that hold connections open, and keys that rotate.

Each test runs the real command (the runner's uvicorn wiring is what is under
test) and talks to it over raw sockets where an HTTP library would not misbehave
on purpose: half a request head then silence (slowloris), a body sent one byte
at a time, more connections than the gateway takes. The replica behind it is a
small HTTP server in a thread that answers every completion at once; what is
tested is the gateway's side of the connection.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.integration.gateway.conftest import GatewayProcess
from tests.support.raw_http import open_connection, trickle_until_answered, wait_closed
from tests.support.secret_volume import SecretVolume

MODEL = "m"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
HEAD_TIMEOUT_S = 1.0
BODY_TIMEOUT_S = 1.0
MARGIN_S = 2.0  # a loaded 2-core CI machine answers late, never early


class _Replica(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._answer(b'{"status": "ready"}')

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        answer = {
            "object": "chat.completion",
            "choices": [{"message": {"role": "assistant", "content": "hello"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }
        self._answer(json.dumps(answer).encode())

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture(scope="module")
def replica() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Replica)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def gateway(replica: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """Short deadlines, so a test sees them pass in a second."""
    gw = GatewayProcess.static(
        tmp_path_factory.mktemp("hostile"), "deadlines", [replica],
        "--header-timeout", str(HEAD_TIMEOUT_S), "--body-timeout", str(BODY_TIMEOUT_S),
        model=MODEL,
    ).start()  # fmt: skip
    try:
        yield gw.wait_synced()
    finally:
        gw.stop()


def test_a_half_sent_request_head_gets_408_and_is_closed_within_the_deadline(
    gateway: GatewayProcess,
) -> None:
    sock = open_connection(gateway.url)
    started = time.monotonic()
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Ty")
    closed = wait_closed(sock, started, timeout_s=30)
    sock.close()
    assert closed.after_s < HEAD_TIMEOUT_S + MARGIN_S, "the half-sent head was never closed"
    assert closed.status == 408
    assert closed.headers["connection"] == "close"
    error = closed.json()["error"]
    assert error["type"] == "timeout_error" and "request head" in error["message"]


def test_a_connection_that_sends_nothing_is_closed_within_the_deadline(
    gateway: GatewayProcess,
) -> None:
    sock = open_connection(gateway.url)
    closed = wait_closed(sock, time.monotonic(), timeout_s=30)
    sock.close()
    assert closed.after_s < HEAD_TIMEOUT_S + MARGIN_S
    assert closed.data == b""  # nothing was asked: nothing is answered


def test_a_body_sent_a_byte_at_a_time_gets_408_within_the_deadline(
    gateway: GatewayProcess,
) -> None:
    """A byte every 0.2 s never leaves the connection idle: only a deadline for the whole
    body catches it."""
    sock = open_connection(gateway.url)
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
        "Content-Type: application/json\r\nContent-Length: 10000\r\n\r\n"
    )
    sock.sendall(head.encode() + b'{"model": "m", "messages": [')
    started = time.monotonic()
    trickle_until_answered(sock, b" ", every_s=0.2, timeout_s=30)
    closed = wait_closed(sock, started, timeout_s=30)
    sock.close()
    assert closed.after_s < BODY_TIMEOUT_S + MARGIN_S
    assert closed.status == 408 and closed.headers["connection"] == "close"
    assert closed.json()["error"]["message"] == (
        f"the request body did not arrive within {BODY_TIMEOUT_S:g}s"
    )


def test_normal_requests_are_served_while_many_connections_hang(
    gateway: GatewayProcess,
) -> None:
    with ExitStack() as stack:
        hanging = []
        for _ in range(64):
            sock = stack.enter_context(open_connection(gateway.url))
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n")
            hanging.append(sock)
        started = time.monotonic()
        with httpx.Client(base_url=gateway.url, timeout=10) as client:
            answers = [client.post("/v1/chat/completions", json=CHAT) for _ in range(5)]
            models = client.get("/v1/models")
        assert [a.status_code for a in answers] == [200] * 5
        assert answers[0].json()["choices"][0]["message"]["content"] == "hello"
        assert models.status_code == 200
        # And the hanging ones go, each within its deadline.
        closed = [wait_closed(sock, started, timeout_s=30) for sock in hanging]
    assert all(c.after_s < HEAD_TIMEOUT_S + MARGIN_S for c in closed)
    assert {c.status for c in closed} == {408}


def test_connections_past_the_cap_get_503_in_the_envelope(replica: str, tmp_path: Path) -> None:
    gw = GatewayProcess.static(
        tmp_path, "capped", [replica], "--max-connections", "3", "--header-timeout", "60",
        model=MODEL,
    ).start()  # fmt: skip
    try:
        gw.wait_synced()
        with ExitStack() as stack:
            for _ in range(3):
                sock = stack.enter_context(open_connection(gw.url))
                sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n")
            refused = httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, timeout=10)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["connection"] == "close"
        assert refused.json()["error"]["type"] == "service_unavailable"
        # With the three closed, a request is served again.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if httpx.post(f"{gw.url}/v1/chat/completions", json=CHAT, timeout=10).is_success:
                break
            time.sleep(0.1)
        else:
            pytest.fail("requests still refused after the connections closed")
    finally:
        gw.stop()


def test_a_key_removed_from_the_mounted_secret_is_refused_without_a_restart(
    replica: str, tmp_path: Path
) -> None:
    """The Secret volume is updated the way the kubelet does it (a `..data` symlink swap);
    the gateway, left at its default reload interval, follows within seconds."""
    secret = SecretVolume(tmp_path / "gateway-keys", {"keys": "sk-old\n"})
    gw = GatewayProcess.static(
        tmp_path, "keys", [replica], "--api-key-file", str(secret.path("keys")), model=MODEL
    ).start()
    try:
        gw.wait_synced()

        def status(key: str) -> int:
            headers = {"Authorization": f"Bearer {key}"}
            return httpx.get(f"{gw.url}/v1/models", headers=headers, timeout=10).status_code

        assert (status("sk-old"), status("sk-new")) == (200, 401)
        secret.update({"keys": "# rotated\nsk-new\n"})
        rotated = time.monotonic()
        while (status("sk-old"), status("sk-new")) != (401, 200):
            if time.monotonic() - rotated > 60:
                pytest.fail(f"the gateway still takes the old key after 60 s:\n{gw.log()}")
            time.sleep(0.2)
        chat = httpx.post(
            f"{gw.url}/v1/chat/completions",
            json=CHAT,
            headers={"Authorization": "Bearer sk-new"},
            timeout=10,
        )
        assert chat.status_code == 200
        assert "API keys reloaded" in gw.log()
    finally:
        gw.stop()
