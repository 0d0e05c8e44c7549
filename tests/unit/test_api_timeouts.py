"""Every Kubernetes API call of the operator and the gateway gives up in bounded time.

An API server that accepts a connection and then says nothing (an overloaded
control plane, a half-open connection through a load balancer) is played by
a real socket that never answers. Without a read timeout the operator's
reconcile, the autoscaler's scale write, or the gateway's discovery list would
wait on it for ever.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Iterator

import kopf
import pytest
from kubernetes import client

from modelplane.gateway.discovery.kubernetes import KubernetesDiscovery
from modelplane.gateway.routing.routes import RoutingTable
from modelplane.operator.kube.client import (
    REQUEST_TIMEOUT,
    KubeApi,
    KubeError,
    apply_api_timeouts,
)
from modelplane.operator.kube.resources import DEPLOYMENTS


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections, reads what is sent, never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    listener.close()


def api_client(host: str) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = host
    return client.ApiClient(configuration)


def test_an_operator_call_to_a_silent_api_server_fails_in_bounded_time(silent_server: str) -> None:
    api = KubeApi(api_client(silent_server), timeout=(1.0, 0.5))
    started = time.monotonic()
    with pytest.raises(KubeError) as raised:
        api.get(DEPLOYMENTS, "default", "chat")
    assert time.monotonic() - started < 10
    assert "Timeout" in str(raised.value) and "GET /apis/apps/v1" in str(raised.value)


def test_the_default_bounds_are_finite() -> None:
    connect, read = REQUEST_TIMEOUT
    assert 0 < connect <= 10 and 0 < read <= 60


def test_kopfs_own_calls_get_the_same_bounds() -> None:
    settings = kopf.OperatorSettings()
    assert settings.networking.connect_timeout is None  # kopf's default: unbounded connect
    apply_api_timeouts(settings)
    assert settings.networking.connect_timeout == REQUEST_TIMEOUT[0]
    assert settings.networking.request_timeout == REQUEST_TIMEOUT[1]
    assert settings.watching.connect_timeout == REQUEST_TIMEOUT[0]


async def test_gateway_discovery_gives_up_on_a_silent_api_server_and_retries(
    silent_server: str, caplog: pytest.LogCaptureFixture
) -> None:
    discovery = KubernetesDiscovery(
        RoutingTable(),
        lambda: api_client(silent_server),
        namespaces=["default"],
        retry_delay_s=0.1,
        list_timeout=(1.0, 0.5),
    )
    caplog.set_level(logging.WARNING)
    task = asyncio.create_task(discovery.run())
    try:
        deadline = time.monotonic() + 20
        while not any("listing again" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "discovery never gave up on the silent server"
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
