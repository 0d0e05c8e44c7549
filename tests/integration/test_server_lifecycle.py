"""Start-up refusal, embeddings, scoring, and graceful drain on SIGTERM, against real vLLM
on CPU."""

from __future__ import annotations

import math
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from modelplane.server.model_build import embedding_model_dir
from tests.conftest import MODELPLANE, ServerProcess
from tests.integration.gateway.conftest import GatewayProcess

pytestmark = pytest.mark.engine


def test_unsupported_combination_fails_at_start_with_one_line(smollm2_dir: Path) -> None:
    result = subprocess.run(
        [*MODELPLANE, "serve", "--model", str(smollm2_dir), "--quantization", "fp8"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    reason = [line for line in result.stderr.splitlines() if line.startswith("modelplane serve:")]
    assert len(reason) == 1
    assert "fp8" in reason[0] and "GPU" in reason[0]


def test_context_beyond_the_model_fails_at_start(smollm2_dir: Path) -> None:
    result = subprocess.run(
        [*MODELPLANE, "serve", "--model", str(smollm2_dir), "--max-model-len", "100000"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2
    assert "maxModelLen 100000 exceeds the model's context of 8192" in result.stderr


def test_embeddings_from_a_real_embedding_model(tmp_path: Path) -> None:
    """all-MiniLM-L6-v2 with vLLM's pooling runner; API keys off (the API is open). It
    also scores and reranks (by the cosine of embeddings: a bi-encoder), on the server and
    through a gateway that routes by `model`."""
    server = ServerProcess(
        args=["--model", str(embedding_model_dir()), "--served-model-name", "minilm",
              "--runner", "pooling", "--enforce-eager"],
        log_path=tmp_path / "embed.log",
    )  # fmt: skip
    try:
        server.start().wait_ready()
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        result = client.embeddings.create(model="minilm", input=["a cat", "a kitten", "a tax form"])
        vectors = [d.embedding for d in result.data]
        assert [len(v) for v in vectors] == [384, 384, 384]

        def cos(a: list[float], b: list[float]) -> float:
            dot = sum(x * y for x, y in zip(a, b, strict=True))
            return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))

        assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2])
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(
                model="minilm", messages=[{"role": "user", "content": "hi"}]
            )
        assert httpx.get(f"{server.url}/ready").json()["endpoints"] == [
            "/v1/embeddings", "/v1/score", "/v1/rerank"
        ]  # fmt: skip
        gateway = GatewayProcess.static(tmp_path, "gateway", [server.url], model="minilm")
        try:
            for url in (server.url, gateway.start().wait_synced().url):
                _scores_and_reranks(url, cos(vectors[0], vectors[1]))
        finally:
            gateway.stop()
    finally:
        server.stop()


def _scores_and_reranks(url: str, cat_kitten: float) -> None:
    documents = ["a tax form", "a kitten"]
    for path in ("/v1/score", "/score"):
        scored = httpx.post(
            f"{url}{path}", json={"model": "minilm", "queries": "a cat", "documents": documents}
        )
        assert scored.status_code == 200, scored.text
        scores = [d["score"] for d in scored.json()["data"]]
        assert scores[1] > scores[0] and math.isclose(scores[1], cat_kitten, rel_tol=1e-3)
    for path in ("/v1/rerank", "/rerank", "/v2/rerank"):
        ranked = httpx.post(
            f"{url}{path}", json={"model": "minilm", "query": "a cat", "documents": documents}
        )
        assert ranked.status_code == 200, ranked.text
        assert [r["document"]["text"] for r in ranked.json()["results"]] == [
            "a kitten", "a tax form"
        ]  # fmt: skip
        assert ranked.json()["usage"]["total_tokens"] > 0
    refused = httpx.post(f"{url}/v1/score", json={"model": "minilm", "documents": 5})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == 400


# Long enough to be in flight when SIGTERM is sent right after its first token.
STREAM_TOKENS = 900


def test_sigterm_turns_readiness_off_and_serves_in_flight_and_arriving_requests(
    smollm2_dir: Path, tmp_path: Path
) -> None:
    """After SIGTERM (in a pod: after the pre-stop sleep) `/ready` is 503 at once, while a
    request that still arrives is answered and requests in flight run to their end; then
    the process exits 0 on its own.

    One request in flight is a stream; the other is held open by the test, which uploads
    its body slowly (the server counts a request from arrival, upload included), so the
    drain cannot end before the late request is sent however fast the stream runs."""
    server = ServerProcess(
        args=["--model", str(smollm2_dir), "--served-model-name", "smollm2",
              "--max-model-len", "1024", "--enforce-eager", "--drain-timeout", "120",
              "--body-timeout", "120"],
        log_path=tmp_path / "drain.log",
    )  # fmt: skip
    release = threading.Event()
    try:
        server.start().wait_ready()
        assert (200, 503) in server.probes  # alive but not ready while loading
        events: list[str] = []
        first_event = threading.Event()

        def stream() -> None:
            body = {"model": "smollm2", "prompt": "Once upon a time", "max_tokens": STREAM_TOKENS,
                    "ignore_eos": True, "stream": True}  # fmt: skip
            with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=120) as r:
                for line in r.iter_lines():
                    if line.startswith("data: "):
                        events.append(line)
                        first_event.set()

        held: list[httpx.Response] = []

        def held_upload() -> Iterator[bytes]:
            yield b'{"model": "smollm2", "prompt": "The capital of Italy is",'
            release.wait(120)
            yield b' "max_tokens": 8}'

        def send_held() -> None:
            held.append(
                httpx.post(
                    f"{server.url}/v1/completions",
                    content=held_upload(),
                    headers={"content-type": "application/json"},
                    timeout=120,
                )
            )

        holder = threading.Thread(target=send_held)
        holder.start()
        _wait_in_flight(server, 1)
        reader = threading.Thread(target=stream)
        reader.start()
        assert first_event.wait(60), server.log_tail()
        server.terminate()
        assert "data: [DONE]" not in events, "the stream ended before SIGTERM was sent"

        deadline = time.monotonic() + 10
        while _ready_status(server, events) != 503:
            assert time.monotonic() < deadline, "readiness did not turn 503 after SIGTERM"
        assert httpx.get(f"{server.url}/health").status_code == 200
        metrics = httpx.get(f"{server.url}/metrics").text
        assert "modelplane_draining 1.0" in metrics

        # A client calling the Service directly, routed here before the endpoint went away.
        late = httpx.post(
            f"{server.url}/v1/completions",
            json={"model": "smollm2", "prompt": "The capital of France is", "max_tokens": 8},
            timeout=60,
        )
        assert late.status_code == 200, late.text
        assert late.json()["choices"][0]["text"]
        assert late.headers["connection"] == "close"

        release.set()
        holder.join(120)
        assert held and held[0].status_code == 200, held and held[0].text
        assert held[0].json()["choices"][0]["text"]
        reader.join(120)
        assert events[-1] == "data: [DONE]"
        tokens = [e for e in events[:-1] if '"text"' in e and "error" not in e]
        assert len(tokens) == STREAM_TOKENS, f"stream cut short: {len(tokens)} chunks"
        assert server.wait_exit(120) == 0
    finally:
        release.set()
        server.stop()


def _wait_in_flight(server: ServerProcess, count: int) -> None:
    """Poll the server's own gauge until `count` requests are in flight."""
    deadline = time.monotonic() + 60
    line = 'modelplane_requests_in_flight{model="smollm2"}'
    while True:
        text = httpx.get(f"{server.url}/metrics").text
        values = [float(ln.split()[-1]) for ln in text.splitlines() if ln.startswith(line)]
        if values and values[0] >= count:
            return
        assert time.monotonic() < deadline, f"{count} requests never in flight: {values}"
        time.sleep(0.05)


def _ready_status(server: ServerProcess, events: list[str]) -> int:
    """`/ready`'s status; a server that stopped listening fails with what it streamed and logged."""
    try:
        return httpx.get(f"{server.url}/ready").status_code
    except httpx.TransportError as err:
        pytest.fail(
            f"server stopped listening during the drain ({err}); exit code "
            f"{server.proc.poll() if server.proc else None}; {len(events)} events, last "
            f"{events[-2:]}:\n{server.log_tail()}"
        )
