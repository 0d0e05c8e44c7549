"""The real model server and a gateway in front of it, shared by the modules that drive
the OpenAI surface with the official client (test_server_openai, test_server_responses):
one engine start for all of them, not one per module.

The server is vLLM (CPU build) serving SmolLM2-135M-Instruct with API keys on; its key
file is a Secret volume as the kubelet lays it out, so a test can rotate a key the way a
cluster does; its head and body deadlines are short (2 s), so tests of half-sent requests
see them pass quickly. The gateway has its own key and the same size limit and deadline.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess
from tests.integration.gateway.conftest import GatewayProcess
from tests.support.secret_volume import SecretVolume

KEY = "sk-test-alpha"
OLD_KEY = "sk-test-old"  # rotated out by a test
MODEL = "smollm2"
DEADLINE_S = 2.0  # --header-timeout and --body-timeout
GATEWAY_KEY = "sk-gateway"


@pytest.fixture(scope="session")
def server_keys(tmp_path_factory: pytest.TempPathFactory) -> SecretVolume:
    """The server's key file, mounted as a Secret volume is."""
    root = tmp_path_factory.mktemp("server-keys") / "volume"
    return SecretVolume(root, {"keys": f"# rotated keys\n{KEY}\n{OLD_KEY}\n"})


@pytest.fixture(scope="session")
def server(
    smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory, server_keys: SecretVolume
) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("chat-server")
    proc = ServerProcess(
        args=[
            "--model", str(smollm2_dir), "--served-model-name", MODEL,
            "--api-key-file", str(server_keys.path("keys")), "--max-model-len", "2048",
            "--enforce-eager", "--max-request-bytes", "65536",
            "--header-timeout", str(DEADLINE_S), "--body-timeout", str(DEADLINE_S),
        ],
        log_path=tmp / "server.log",
        env={"MODELPLANE_API_KEYS": "sk-test-beta"},
    )  # fmt: skip
    proc.start().wait_ready()
    yield proc
    proc.stop()


@pytest.fixture(scope="session")
def gateway(
    server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway in front of the server, with its own key, the same size and deadline."""
    tmp = tmp_path_factory.mktemp("gateway")
    (tmp / "upstream.key").write_text(f"{KEY}\n")
    (tmp / "gateway.keys").write_text(f"{GATEWAY_KEY}\n")
    config = tmp / "models.yaml"
    config.write_text(
        f"models:\n  {MODEL}:\n    upstreams: [{server.url}]\n"
        "    upstreamApiKeyFile: upstream.key\n"
    )
    gateway = GatewayProcess.with_args(
        tmp, "gateway", "--config", str(config), "--api-key-file", str(tmp / "gateway.keys"),
        "--max-request-bytes", "65536", "--body-timeout", str(DEADLINE_S),
    ).start()  # fmt: skip
    try:
        yield gateway.wait_synced()
    finally:
        gateway.stop()
