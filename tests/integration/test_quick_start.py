"""The README's quick start, as a newcomer follows it, against the real local model.

`modelplane local` with no config is what `make run` runs: the packaged
SmolLM2 on the CPU engine behind the gateway (on free ports here, so the
README's and the banner's commands are run with the port changed and
nothing else). The tests run in file order and the last one of each stack
stops it with Ctrl-C: a normal stop prints no traceback and no vLLM
"force killing" line, with one model and with two (SmolLM2 and MiniLM, whose
engines stop side by side on the same CPUs).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import MODELPLANE, REPO, free_port
from tests.integration.gateway.conftest import Process

pytestmark = pytest.mark.engine

README = REPO / "README.md"
README_URL = "http://127.0.0.1:8000"
QUESTION = "What is the capital of France?"
# What must never reach a terminal or a log on a normal stop.
STOP_NOISE = ("Traceback", "force killing", "EngineDeadError", "output_handler failed")


@dataclass
class Stack:
    process: Process
    url: str

    def terminal(self) -> str:
        return self.process.log()

    def log_dir(self) -> Path:
        match = re.search(r"^  Engine logs: (.+)/$", self.terminal(), re.M)
        assert match, self.terminal()
        return Path(match.group(1))

    def engine_logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.log_dir().glob("*.log")))

    def stop_with_ctrl_c(self) -> int:
        self.process.signal(signal.SIGINT)
        assert self.process.proc is not None
        return self.process.proc.wait(120)


def start_stack(tmp: Path, *flags: str) -> Stack:
    port, metrics_port = free_port(), free_port()
    process = Process(
        ["local", "--port", str(port), "--metrics-port", str(metrics_port), *flags],
        tmp / "terminal.log",
    ).start()
    process.wait_for_output("Ctrl-C stops everything.")
    return Stack(process, f"http://127.0.0.1:{port}")


@pytest.fixture(scope="module")
def quick_start(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`make run`: the default config, engine logs in a temporary folder it names."""
    del smollm2_dir  # built by `make test` first; without it the test is skipped
    stack = start_stack(tmp_path_factory.mktemp("quick-start"))
    try:
        yield stack
    finally:
        stack.process.stop()
        logs = stack.log_dir()
        if logs.parent == Path(tempfile.gettempdir()) and logs.name.startswith("modelplane-"):
            shutil.rmtree(logs, ignore_errors=True)


def run_shell(command: str, timeout_s: float = 300) -> str:
    """`command` as a user pastes it into bash, in the folder the stack was started from."""
    result = subprocess.run(
        ["bash", "-c", command],
        cwd=os.getcwd(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def printed_commands(terminal: str) -> tuple[str, str]:
    """The banner's curl command and its Python heredoc, as printed."""
    curl = re.search(r"^curl .*?'\n", terminal, re.S | re.M)
    python = re.search(r"^\S+ - <<'EOF'\n.*?^EOF\n", terminal, re.S | re.M)
    assert curl and python, terminal
    return curl.group(0), python.group(0)


def test_startup_speaks_in_words_and_keeps_the_engine_output_in_its_log(
    quick_start: Stack,
) -> None:
    terminal = quick_start.terminal()
    loading = re.search(
        r"^Loading smollm2 with vLLM on the CPU \(log: (.+\.log)\)$",
        terminal,
        re.M,
    )
    assert loading, terminal
    assert re.search(r"^smollm2 is ready \(loaded in \d+ s\)$", terminal, re.M)
    assert f"Ready: Modelplane is serving 'smollm2' at {quick_start.url}/v1" in terminal
    for noise in ("vllm", "Triton", "LD_PRELOAD", "FutureWarning", "uvicorn", "Uvicorn"):
        assert noise not in terminal, noise
    log = Path(loading.group(1))
    assert log.parent == quick_start.log_dir()
    assert "vllm.v1.engine.core: Initializing a V1 LLM engine" in log.read_text()


def test_the_banner_commands_work_as_pasted_and_the_first_answer_is_right(
    quick_start: Stack,
) -> None:
    curl, python = printed_commands(quick_start.terminal())
    answer = httpx.Response(200, content=run_shell(curl)).json()
    assert "Paris" in answer["choices"][0]["message"]["content"]
    haiku = run_shell(python)
    assert haiku.strip() and len(haiku) < 2000  # a short answer, not a loop


def test_the_readme_quick_start_commands_work_as_pasted(quick_start: Stack) -> None:
    """Run from the repository (where `.venv/bin/python` is), with the port changed."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), re.S)
    curl = next(b for b in blocks if b.startswith(f"curl -s {README_URL}/v1/chat/completions"))
    python = next(b for b in blocks if b.startswith(".venv/bin/python - <<'EOF'"))
    if not (REPO / ".venv" / "bin" / "python").exists():  # tests run from another virtualenv
        python = python.replace(".venv/bin/python", sys.executable, 1)
    outputs = []
    for command in (curl, python):
        result = subprocess.run(
            ["bash", "-c", command.replace(README_URL, quick_start.url)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    answer, haiku = outputs
    assert "Paris" in httpx.Response(200, content=answer).json()["choices"][0]["message"]["content"]
    assert haiku.strip() and len(haiku) < 2000


def test_a_request_that_sets_no_temperature_gets_the_same_right_answer(
    quick_start: Stack,
) -> None:
    """What the chat page and `modelplane chat` send: the local model's defaults apply."""
    body = {"model": "smollm2", "messages": [{"role": "user", "content": QUESTION}]}
    answers = [
        httpx.post(f"{quick_start.url}/v1/chat/completions", json=body, timeout=120).json()
        for _ in range(2)
    ]
    texts = [a["choices"][0]["message"]["content"] for a in answers]
    assert "Paris" in texts[0] and texts[0] == texts[1]


def test_modelplane_chat_finds_the_stack_from_port_alone(quick_start: Stack) -> None:
    """`PORT=... make run`, then `PORT=... modelplane chat`: no --url needed."""
    env = {k: v for k, v in os.environ.items() if k not in ("HOST", "MODELPLANE_API_KEY")}
    result = subprocess.run(
        [*MODELPLANE, "chat"],
        input=f"{QUESTION}\n/reset\n{QUESTION}\n",
        env={**env, "PORT": quick_start.url.rsplit(":", 1)[1]},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("Paris") == 2
    assert "[conversation cleared]" in result.stderr


def test_ctrl_c_stops_quietly(quick_start: Stack) -> None:
    assert quick_start.stop_with_ctrl_c() == 0
    terminal = quick_start.terminal()
    stop = terminal[terminal.index("Stopping:") :]
    assert stop.splitlines() == [
        "Stopping: the gateway finishes the requests in flight, then the model servers.",
        "Stopped.",
    ]
    logs = quick_start.engine_logs()
    assert "modelplane.server: stopped" in logs
    for noise in STOP_NOISE:
        assert noise not in terminal and noise not in logs, noise


@pytest.fixture(scope="module")
def two_models(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("two-models")
    config = tmp / "models.yaml"
    config.write_text(
        f"models:\n  - name: smollm2\n    model: {smollm2_dir}\n"
        "    args: [--max-model-len, '2048', --enforce-eager]\n"
        "  - name: minilm\n    model: builtin:minilm\n"
        "    args: [--runner, pooling, --enforce-eager]\n"
    )
    stack = start_stack(tmp, "--config", str(config), "--log-dir", str(tmp / "engine-logs"))
    try:
        yield stack
    finally:
        stack.process.stop()


def test_ctrl_c_with_two_models_stops_both_engines_quietly(two_models: Stack) -> None:
    """Both engines have served (their output tasks are running), then stop side by side."""
    chat = {"model": "smollm2", "messages": [{"role": "user", "content": QUESTION}]}
    reply = httpx.post(f"{two_models.url}/v1/chat/completions", json=chat, timeout=120)
    assert "Paris" in reply.json()["choices"][0]["message"]["content"]
    embedding = httpx.post(
        f"{two_models.url}/v1/embeddings", json={"model": "minilm", "input": "hi"}, timeout=120
    )
    assert len(embedding.json()["data"][0]["embedding"]) == 384
    assert two_models.stop_with_ctrl_c() == 0
    terminal, logs = two_models.terminal(), two_models.engine_logs()
    assert terminal.rstrip().endswith("Stopped.")
    assert logs.count("modelplane.server: stopped") == 2
    for noise in STOP_NOISE:
        assert noise not in terminal and noise not in logs, noise
