"""A running gateway keeps the client's key to itself and sends each model's replicas their own.

`modelplane gateway` runs as a process in front of stub replicas that record
the headers they get (tests/unit/gateway/conftest.py). With static discovery
a model's key comes from its `upstreamApiKeyFile`; with Kubernetes discovery
(against KMock's emulator, see cluster_objects.py) from the Secret its
LLMDeployment's `auth.apiKeySecretRef` names. Whatever credential a client
sends (`Authorization`, `api-key`, `x-api-key`, a cookie), a replica never
sees it; two `Authorization` headers are refused before either is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx

from tests.integration.gateway.cluster_objects import Cluster
from tests.integration.gateway.conftest import GatewayProcess
from tests.unit.gateway.conftest import StubFactory, StubReplica

CHAT = "/v1/chat/completions"
CLIENT_KEY = "sk-client-3f9a"
CLIENT_CREDENTIALS = {
    "Authorization": f"Bearer {CLIENT_KEY}",
    "api-key": CLIENT_KEY,
    "x-api-key": CLIENT_KEY,
    "Cookie": f"session={CLIENT_KEY}",
}


def chat(model: str) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


@contextlib.asynccontextmanager
async def running(gateway: GatewayProcess) -> AsyncIterator[GatewayProcess]:
    gateway.start()
    try:
        yield await gateway.wait_synced_async()
    finally:
        await asyncio.to_thread(gateway.stop)


def last_headers(replica: StubReplica) -> dict[str, str]:
    headers: dict[str, str] = replica.seen[-1]["headers"]
    return headers


async def until(condition: Callable[[], object], timeout_s: float = 20) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 - the replica's log has no event
            await asyncio.sleep(0.05)


async def test_static_models_get_their_own_key_and_never_the_clients(
    tmp_path: Path, stub_replicas: StubFactory
) -> None:
    keyed, open_model = await stub_replicas(2)
    (tmp_path / "clients.keys").write_text(f"{CLIENT_KEY}\n")
    key_file = tmp_path / "chat.key"
    key_file.write_text("# the key chat's servers accept\nsk-model-1\nsk-model-old\n")
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"models:\n"
        f"  chat:\n    upstreams: [{keyed.url}]\n    upstreamApiKeyFile: chat.key\n"
        f"  open:\n    upstreams: [{open_model.url}]\n"
    )
    gateway = GatewayProcess.with_args(
        tmp_path, "gateway", "--config", str(config), "--health-interval", "0.1",
        "--api-key-file", str(tmp_path / "clients.keys"),
    )  # fmt: skip
    async with running(gateway), httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        keyed_answer = await client.post(CHAT, json=chat("chat"), headers=CLIENT_CREDENTIALS)
        open_answer = await client.post(CHAT, json=chat("open"), headers=CLIENT_CREDENTIALS)
        assert keyed_answer.status_code == open_answer.status_code == 200
        sent = last_headers(keyed)
        assert sent["authorization"] == "Bearer sk-model-1"
        assert not [v for v in sent.values() if CLIENT_KEY in v], sent
        assert not [v for v in last_headers(open_model).values() if CLIENT_KEY in v]
        assert "authorization" not in last_headers(open_model)  # it has no key to send

        # Two Authorization headers: which one would be checked, which one forwarded?
        seen = len(keyed.seen)
        twice = await client.post(
            CHAT,
            json=chat("chat"),
            headers=[("Authorization", f"Bearer {CLIENT_KEY}"), ("Authorization", "Bearer x")],
        )
        assert twice.status_code == 400, twice.text
        error = twice.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert "'authorization' header more than once" in error["message"]
        assert len(keyed.seen) == seen  # nothing reached a replica

        # The model's key is rotated in place (as a mounted Secret is): the next requests
        # carry the new one, with no restart.
        key_file.write_text("sk-model-2\n")
        os.utime(key_file, (1, 1))

        async def rotated() -> bool:
            await client.post(CHAT, json=chat("chat"), headers=CLIENT_CREDENTIALS)
            return last_headers(keyed)["authorization"] == "Bearer sk-model-2"

        async with asyncio.timeout(20):
            while not await rotated():  # noqa: ASYNC110 - polling the gateway
                await asyncio.sleep(0.1)


async def test_cluster_models_get_the_key_their_llmdeployment_names(
    tmp_path: Path, stub_replicas: StubFactory, cluster: Cluster
) -> None:
    (replica,) = await stub_replicas(1)
    llmd = cluster.llmdeployment("team", "chat", "chat", key_secret="chat-keys")
    cluster.key_secret("team", "chat-keys", "sk-model-1\nsk-model-old\n")
    cluster.model_service(llmd, int(replica.url.rsplit(":", 1)[1]))
    gateway = cluster.gateway(
        tmp_path, "gateway", "--namespace", "team", "--model-key-refresh", "0.2"
    )
    async with running(gateway), httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
        answer = await client.post(CHAT, json=chat("chat"), headers=CLIENT_CREDENTIALS)
        assert answer.status_code == 200, answer.text
        sent = last_headers(replica)
        assert sent["authorization"] == "Bearer sk-model-1"
        assert not [v for v in sent.values() if CLIENT_KEY in v], sent

        cluster.rotate_key("team", "chat-keys", "sk-model-2\n")

        async def rotated() -> bool:
            await client.post(CHAT, json=chat("chat"), headers=CLIENT_CREDENTIALS)
            return last_headers(replica)["authorization"] == "Bearer sk-model-2"

        async with asyncio.timeout(20):
            while not await rotated():  # noqa: ASYNC110 - polling the gateway
                await asyncio.sleep(0.1)

        # The Secret is deleted: the key is revoked, and the model's requests say why
        # instead of reaching replicas that would refuse them.
        cluster.kubectl.delete("v1", "secrets", "team", "chat-keys")
        async with asyncio.timeout(20):  # within one --model-key-refresh
            while (refused := await client.post(CHAT, json=chat("chat"))).status_code != 503:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        assert "cannot read the API key of model 'chat'" in refused.json()["error"]["message"]
        assert refused.headers["retry-after"] == "30"
        await until(lambda: "Secret team/chat-keys does not exist" in gateway.log())
        seen = len(replica.seen)
        again = await client.post(CHAT, json=chat("chat"), headers=CLIENT_CREDENTIALS)
        assert again.status_code == 503 and len(replica.seen) == seen
