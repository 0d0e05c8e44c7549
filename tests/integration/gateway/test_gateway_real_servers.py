"""The gateway in front of real model servers (vLLM on CPU, SmolLM2), as users run it.

Two engines for the whole module, because each start costs half a minute
of CPU: server A is started by `modelplane local` (what `make run` runs)
at the top, server B only when the scale-from-zero test needs a server
that starts late; the failover test then kills B. The tests run in file
order and the last one stops the local stack with Ctrl-C.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from modelplane.local.cpu_binding import server_envs
from tests.conftest import MODELPLANE, ServerProcess, free_port
from tests.integration.gateway.conftest import GatewayProcess, Process

pytestmark = pytest.mark.engine

MODEL = "smollm2"
PARIS: list[ChatCompletionMessageParam] = [
    {"role": "user", "content": "What is the capital of France?"}
]


class LocalStack:
    def __init__(
        self, process: Process, gateway_port: int, server_port: int, metrics_port: int
    ) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{gateway_port}"
        self.server_url = f"http://127.0.0.1:{server_port}"
        self.metrics_port = metrics_port

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="none", max_retries=0)


# The stack's server and the late one run side by side: each computes on its own CPUs, as
# local mode arranges for the servers it starts (left to vLLM, both would pin core 0).
TWO_SERVER_BINDS = server_envs(2, {})


@pytest.fixture(scope="module")
def stack(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    tmp = tmp_path_factory.mktemp("local-stack")
    gateway_port, server_port, metrics_port = free_port(), free_port(), free_port()
    config = tmp / "models.yaml"
    config.write_text(
        f"models:\n  - name: {MODEL}\n    model: {smollm2_dir}\n    port: {server_port}\n"
        "    args: [--max-model-len, '2048', --enforce-eager]\n"
    )
    ports = ["--port", str(gateway_port), "--metrics-port", str(metrics_port)]
    process = Process(
        ["local", "--config", str(config), *ports],
        tmp / "local.log",
        env=TWO_SERVER_BINDS[0],
    ).start()
    try:
        process.wait_for_output("Chat page:")
        yield LocalStack(process, gateway_port, server_port, metrics_port)
    finally:
        process.stop()


@pytest.fixture(scope="module")
def late_server(
    smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    """A second replica, not started: the scale-from-zero test starts it late."""
    server = ServerProcess(
        args=["--model", str(smollm2_dir), "--served-model-name", MODEL,
              "--max-model-len", "2048", "--enforce-eager"],
        log_path=tmp_path_factory.mktemp("late") / "server.log",
        env=TWO_SERVER_BINDS[1],
    )  # fmt: skip
    yield server
    server.stop()


def test_local_mode_prints_the_gateway_as_the_address_to_use(stack: LocalStack) -> None:
    output = stack.process.log()
    assert f"curl -s {stack.url}/v1/chat/completions" in output
    assert f'OpenAI(base_url="{stack.url}/v1"' in output
    assert f"Chat page: {stack.url}/" in output
    assert f"Metrics (Prometheus): http://127.0.0.1:{stack.metrics_port}/metrics" in output
    assert stack.server_url not in output.split("Modelplane is serving")[-1]


def test_local_mode_serves_metrics_on_their_own_port_only(stack: LocalStack) -> None:
    """The series name replicas by address: not on the port clients use."""
    assert httpx.get(f"{stack.url}/metrics", timeout=5).status_code == 404
    scrape = httpx.get(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=5)
    assert scrape.status_code == 200 and "modelplane_gateway_ready_replicas" in scrape.text


def test_openai_client_through_the_gateway_plain_and_streamed(stack: LocalStack) -> None:
    client = stack.client()
    assert [m.id for m in client.models.list()] == [MODEL]
    reply = client.chat.completions.create(
        model=MODEL,
        messages=PARIS,
        temperature=0,
        max_tokens=30,
    )
    assert "Paris" in (reply.choices[0].message.content or "")
    stream = client.chat.completions.create(
        model=MODEL,
        messages=PARIS,
        temperature=0,
        max_tokens=30,
        stream=True,
    )
    pieces = [
        c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content
    ]
    assert len(pieces) > 3
    assert "".join(pieces) == reply.choices[0].message.content
    plain = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=8, temperature=0)
    streamed = client.completions.create(
        model=MODEL, prompt="The sky is", max_tokens=8, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == plain.choices[0].text
    with pytest.raises(openai.NotFoundError, match="available: smollm2"):
        client.chat.completions.create(model="gpt-4o", messages=PARIS)


CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="Debian chromium + chromium-driver: `make chromium`"
)
def test_chat_page_streams_an_answer_in_headless_chromium(
    stack: LocalStack, tmp_path: Path
) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import Select, WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        driver.get(stack.url + "/")
        wait = WebDriverWait(driver, 120)
        wait.until(lambda d: [o.text for o in Select(d.find_element(By.ID, "model")).options])
        assert [o.text for o in Select(driver.find_element(By.ID, "model")).options] == [MODEL]
        # Count how many times the answer grows: one growth means it was not streamed.
        driver.execute_script(
            "window.growths = 0;"
            "new MutationObserver(() => window.growths++).observe(document.getElementById('log'),"
            "  {subtree: true, characterData: true, childList: true});"
        )
        # The answer arrives paced, as over a slow link: how many reads a burst of SSE events
        # takes must not depend on how busy the machine is, or a starved browser would read
        # a whole stream at once and a streamed answer would look unstreamed.
        driver.set_network_conditions(
            offline=False, latency=0, download_throughput=4096, upload_throughput=1 << 20
        )
        driver.find_element(By.ID, "prompt").send_keys("Write one sentence about the sea.")
        driver.find_element(By.ID, "send").click()
        wait.until(expected_conditions.text_to_be_present_in_element((By.ID, "stats"), "tokens/s"))
        wait.until(lambda d: "streaming" not in d.find_element(By.ID, "stats").text)
        answer = driver.find_element(By.CSS_SELECTOR, ".message.assistant .content").text
        stats = driver.find_element(By.ID, "stats").text
        growths = driver.execute_script("return window.growths;")
    finally:
        driver.quit()
    assert answer.strip()
    assert growths > 5, (growths, stats, answer)
    tokens = int(stats.split(" tokens")[0])
    assert tokens > 3 and "first token after" in stats


def test_terminal_chat_through_the_gateway(stack: LocalStack) -> None:
    result = subprocess.run(
        [*MODELPLANE, "chat", "--url", stack.url, "--temperature", "0", "--max-tokens", "30"],
        input="What is the capital of France?\n/reset\nWhat is the capital of France?\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Paris") >= 2
    assert result.stderr.count("tokens/s") == 2


def test_api_keys_and_rate_limits_in_front_of_a_real_server(
    stack: LocalStack, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.write_text("sk-alpha\nsk-beta\n")
    gateway = GatewayProcess.static(
        tmp_path, "limited", [stack.server_url],
        "--api-key-file", str(keys), "--requests-per-minute", "2", "--tokens-per-minute", "100",
    ).start()  # fmt: skip
    try:
        gateway.wait_synced()
        base = f"{gateway.url}/v1"
        anonymous = openai.OpenAI(base_url=base, api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            anonymous.models.list()
        alpha = openai.OpenAI(base_url=base, api_key="sk-alpha", max_retries=0)
        for _ in range(2):
            alpha.chat.completions.create(model=MODEL, messages=PARIS, max_tokens=5)
        with pytest.raises(openai.RateLimitError) as refused:
            alpha.chat.completions.create(model=MODEL, messages=PARIS, max_tokens=5)
        assert 1 <= int(refused.value.response.headers["retry-after"]) <= 30
        assert "requests per minute" in refused.value.message
        # sk-beta spends its token budget on one long answer (usage is counted).
        beta = openai.OpenAI(base_url=base, api_key="sk-beta", max_retries=0)
        long = beta.completions.create(
            model=MODEL, prompt="Once upon a time", max_tokens=120, extra_body={"ignore_eos": True}
        )
        assert long.usage is not None and long.usage.total_tokens > 100
        with pytest.raises(openai.RateLimitError, match="tokens per minute"):
            beta.completions.create(model=MODEL, prompt="Hi", max_tokens=5)
    finally:
        gateway.stop()


def test_a_request_is_held_until_a_late_server_is_ready(
    stack: LocalStack, late_server: ServerProcess, tmp_path: Path
) -> None:
    gateway = GatewayProcess.static(
        tmp_path, "zero", [late_server.url], "--hold-timeout", "600", "--health-interval", "0.25"
    ).start()
    try:
        gateway.wait_synced()
        answer: dict[str, object] = {}

        def ask() -> None:
            client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="none", max_retries=0)
            reply = client.chat.completions.create(
                model=MODEL,
                messages=PARIS,
                temperature=0,
                max_tokens=30,
                timeout=600,
            )
            answer["text"] = reply.choices[0].message.content

        asker = threading.Thread(target=ask)
        asker.start()
        deadline = time.monotonic() + 30
        while gateway.metric("modelplane_gateway_held_requests", model=MODEL) != 1:
            assert time.monotonic() < deadline, "the request was not held"
            time.sleep(0.1)
        late_server.start()  # the replica starts only now
        asker.join(600)
        assert "Paris" in str(answer.get("text"))
        assert gateway.metric("modelplane_gateway_held_requests", model=MODEL) == 0
        assert gateway.metric("modelplane_gateway_hold_seconds_count", model=MODEL) == 1
    finally:
        gateway.stop()


def test_killing_a_replica_fails_no_request_started_after_the_kill(
    stack: LocalStack, late_server: ServerProcess, tmp_path: Path
) -> None:
    if late_server.proc is None:
        late_server.start()
    late_server.wait_ready()
    # A long health interval: the kill is noticed by failing attempts, not by polling.
    gateway = GatewayProcess.static(
        tmp_path, "failover", [stack.server_url, late_server.url], "--health-interval", "600"
    ).start()
    try:
        gateway.wait_synced()
        results: list[tuple[float, bool]] = []  # (start time, succeeded)
        stop = threading.Event()

        def worker() -> None:
            client = httpx.Client(base_url=f"{gateway.url}/v1", timeout=120)
            body = {"model": MODEL, "prompt": "Count to ten:", "max_tokens": 12, "stream": True}
            while not stop.is_set():
                started = time.monotonic()
                try:
                    with client.stream("POST", "/completions", json=body) as r:
                        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
                    ok = r.status_code == 200 and lines[-1] == "data: [DONE]"
                    ok = ok and not any('"error"' in line for line in lines)
                except httpx.HTTPError:
                    ok = False
                results.append((started, ok))

        workers = [threading.Thread(target=worker, daemon=True) for _ in range(4)]
        for w in workers:
            w.start()
        try:
            served = "modelplane_gateway_requests_total"
            deadline = time.monotonic() + 120
            replicas = (stack.server_url, late_server.url)
            while min(gateway.metric(served, upstream=u) for u in replicas) < 2:
                assert time.monotonic() < deadline, f"not both replicas in use:\n{gateway.log()}"
                assert all(ok for _, ok in results)
                time.sleep(0.05)
            assert late_server.proc is not None
            killed_at = time.monotonic()
            # The whole replica dies, as a pod does: its group holds the engine's processes too.
            os.killpg(late_server.proc.pid, signal.SIGKILL)
            # Requests go on until the dead replica is ejected: its broken streams count as
            # failures, and least-load sends it the next request once they have ended.
            ejected = f"replica {late_server.url} of {MODEL} ejected"
            while sum(r[0] > killed_at for r in results) < 12 or ejected not in gateway.log():
                assert time.monotonic() < deadline + 120, f"not ejected:\n{gateway.log()}"
                time.sleep(0.05)
        finally:
            stop.set()
            for w in workers:
                w.join(120)
    finally:
        gateway.stop()
    after = [ok for started, ok in results if started > killed_at]
    assert all(after), f"{after.count(False)} of {len(after)} requests failed after the kill"
    # Failed attempts took it out of balancing; polling (every 600 s) had no part in it.
    assert ejected in gateway.log()


def test_ctrl_c_stops_the_gateway_and_its_model_servers(stack: LocalStack) -> None:
    stack.process.signal(signal.SIGINT)
    assert stack.process.proc is not None
    assert stack.process.proc.wait(120) == 0
    for url in (stack.url, stack.server_url):
        host, port = url.removeprefix("http://").split(":")
        with pytest.raises(OSError), socket.create_connection((host, int(port)), timeout=2):
            pass
    assert stack.process.log().rstrip().endswith("Stopped.")
