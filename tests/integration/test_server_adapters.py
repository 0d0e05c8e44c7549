"""LoRA adapters on the real model server: vLLM (CPU build) serving SmolLM2-135M-Instruct.

One server is started for the module with an API key, one adapter from the
command line (`--adapter sql=DIR`, random rank-8 weights the tests write:
tests/support/lora_adapter.py) and its admin listener on a port of its own.
The tests drive it as its users do: clients with the official `openai`
client on the public port, the operator's calls on the admin port.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import ServerProcess, free_port
from tests.support.lora_adapter import write_random_adapter

pytestmark = pytest.mark.engine

KEY = "sk-test-lora"
MODEL = "smollm2"
PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def adapter_dirs(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {
        "sql": write_random_adapter(smollm2_dir, root / "sql", seed=1),
        "poet": write_random_adapter(smollm2_dir, root / "poet", seed=2),
        "wide": write_random_adapter(smollm2_dir, root / "wide", seed=3, rank=64),
    }


@pytest.fixture(scope="module")
def admin_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def server(
    smollm2_dir: Path,
    adapter_dirs: dict[str, Path],
    admin_url: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    proc = ServerProcess(
        args=[
            "--model", str(smollm2_dir), "--served-model-name", MODEL,
            "--max-model-len", "1024", "--enforce-eager", "--no-warmup",
            "--adapter", f"sql={adapter_dirs['sql']}", "--max-loras", "2",
            "--admin-port", admin_url.rsplit(":", 1)[1],
        ],
        log_path=tmp_path_factory.mktemp("lora-server") / "server.log",
        env={"MODELPLANE_API_KEYS": KEY},
    )  # fmt: skip
    proc.start().wait_ready()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def admin(server: ServerProcess, admin_url: str) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=admin_url, headers=headers, timeout=300) as http:
        yield http


def greedy(client: openai.OpenAI, model: str) -> str:
    reply = client.completions.create(model=model, prompt=PROMPT, max_tokens=12, temperature=0)
    return reply.choices[0].text


def test_models_lists_the_base_model_and_its_adapter(client: openai.OpenAI) -> None:
    assert sorted(m.id for m in client.models.list()) == ["smollm2", "sql"]


def test_the_adapter_answers_differently_from_the_base_model(client: openai.OpenAI) -> None:
    base, adapted = greedy(client, MODEL), greedy(client, "sql")
    assert "Paris" in base
    assert adapted != base
    assert greedy(client, "sql") == adapted  # greedy: the same answer again


def test_ready_and_the_admin_api_list_the_command_line_adapter(
    server: ServerProcess, admin: httpx.Client, adapter_dirs: dict[str, Path]
) -> None:
    ready = httpx.get(f"{server.url}/ready").json()
    assert ready["adapters"] == ["sql"]
    listed = admin.get("/adapters")
    assert listed.status_code == 200
    assert listed.json() == {
        "adapters": [
            {
                "name": "sql",
                "source": f"file://{adapter_dirs['sql']}",
                "revision": None,
                "state": "loaded",
                "error": None,
            }
        ]
    }


def test_load_serve_reload_and_unload_at_run_time(
    server: ServerProcess,
    client: openai.OpenAI,
    admin: httpx.Client,
    adapter_dirs: dict[str, Path],
) -> None:
    put = admin.put("/adapters/poet", json={"source": f"file://{adapter_dirs['poet']}"})
    assert put.status_code == 200, put.text
    assert put.json()["state"] == "loaded"
    assert "poet" in {m.id for m in client.models.list()}
    assert httpx.get(f"{server.url}/ready").json()["adapters"] == ["poet", "sql"]
    poem = greedy(client, "poet")
    assert poem not in (greedy(client, MODEL), greedy(client, "sql"))
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'modelplane_server_adapter_loaded{adapter="poet"} 1.0' in metrics

    # The same source again changes nothing; another source reloads under the same name.
    again = admin.put("/adapters/poet", json={"source": f"file://{adapter_dirs['poet']}"})
    assert again.status_code == 200 and again.json()["state"] == "loaded"
    swapped = admin.put("/adapters/poet", json={"source": f"file://{adapter_dirs['sql']}"})
    assert swapped.status_code == 200, swapped.text
    assert greedy(client, "poet") == greedy(client, "sql")

    gone = admin.delete("/adapters/poet")
    assert gone.status_code == 200
    assert "poet" not in {m.id for m in client.models.list()}
    assert httpx.get(f"{server.url}/ready").json()["adapters"] == ["sql"]
    assert (
        'modelplane_server_adapter_loaded{adapter="poet"}'
        not in httpx.get(f"{server.url}/metrics").text
    )
    with pytest.raises(openai.NotFoundError) as refused:
        greedy(client, "poet")
    error = refused.value.response.json()["error"]
    assert error["code"] == 404 and "poet" in error["message"]
    assert admin.delete("/adapters/poet").status_code == 404


def test_an_adapter_the_engine_cannot_hold_is_listed_failed_with_the_reason(
    admin: httpx.Client, adapter_dirs: dict[str, Path], client: openai.OpenAI
) -> None:
    refused = admin.put("/adapters/wide", json={"source": f"file://{adapter_dirs['wide']}"})
    assert refused.status_code == 422
    message = refused.json()["error"]["message"]
    assert re.search(r"rank 64 exceeds the engine's maxLoraRank 8", message), message
    (entry,) = [e for e in admin.get("/adapters").json()["adapters"] if e["name"] == "wide"]
    assert entry["state"] == "failed" and "rank 64" in entry["error"]
    assert "wide" not in {m.id for m in client.models.list()}
    assert admin.delete("/adapters/wide").status_code == 200


@pytest.mark.parametrize(
    "method,path",
    [("GET", "/adapters"), ("PUT", "/adapters/x"), ("DELETE", "/adapters/sql"),
     ("POST", "/v1/load_lora_adapter"), ("POST", "/v1/unload_lora_adapter")],
)  # fmt: skip
def test_no_admin_route_on_the_public_port(server: ServerProcess, method: str, path: str) -> None:
    response = httpx.request(
        method,
        f"{server.url}{path}",
        json={"source": "file:///tmp", "lora_name": "x", "lora_path": "/tmp"},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert response.status_code == 404
    assert response.json()["error"]["code"] == 404


def test_the_admin_api_wants_the_servers_key(server: ServerProcess, admin_url: str) -> None:
    url = admin_url
    assert httpx.get(f"{url}/adapters").status_code == 401
    wrong = httpx.get(f"{url}/adapters", headers={"Authorization": "Bearer sk-wrong"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["type"] == "authentication_error"


@pytest.mark.parametrize(
    "path,body,status",
    [
        ("/adapters/big", b'{"source": "' + b"a" * (1 << 20) + b'"}', 413),
        ("/adapters/bytes", b'{"source": "\xff\xfe"}', 400),
        ("/adapters/deep", b"[" * 5000 + b"]" * 5000, 400),
        ("/adapters/up", b'{"source": "file:///tmp/../etc"}', 400),
        ("/adapters/-x", b'{"source": "file:///tmp"}', 400),
    ],
)
def test_hostile_admin_requests_get_an_envelope_over_the_wire(
    admin: httpx.Client, client: openai.OpenAI, path: str, body: bytes, status: int
) -> None:
    response = admin.put(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status
    assert response.json()["error"]["code"] == status
    assert sorted(m.id for m in client.models.list()) == ["smollm2", "sql"]
