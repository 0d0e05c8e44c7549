"""Local mode's terminal: the servers' errors copied from their log files, readiness in words."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelplane.local.engine_logs import ErrorLines, FollowedLog, record_level, tail
from modelplane.local.stack import (
    BuildProgress,
    Child,
    LocalModel,
    Replica,
    local_logging_config,
    ready_changes,
)

LOG = """\
2026-12-06 04:02:06,282 WARNING vllm.triton_utils.importing: Triton is installed, but doesn't \
include CPU backend. Disabling Triton.
Triton is installed, but doesn't include CPU backend. Disabling Triton.
Loading safetensors checkpoint shards: 100% Completed | 1/1 [00:00<00:00,  7.66it/s]
2026-12-06 04:02:22,702 INFO modelplane.server: ready
2026-12-06 04:21:24,815 ERROR vllm.v1.engine.async_llm: AsyncLLM output_handler failed.
Traceback (most recent call last):
  File "async_llm.py", line 849, in output_handler
vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue.
2026-12-06 04:21:24,816 INFO modelplane.server: stopped
Traceback (most recent call last):
  File "<string>", line 1, in <module>
ZeroDivisionError: division by zero
"""


def test_error_records_and_their_tracebacks_are_picked_out_of_the_engine_noise() -> None:
    errors = ErrorLines().feed(LOG)
    assert errors == [
        "2026-12-06 04:21:24,815 ERROR vllm.v1.engine.async_llm: AsyncLLM output_handler failed.",
        "Traceback (most recent call last):",
        '  File "async_llm.py", line 849, in output_handler',
        "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue.",
        "Traceback (most recent call last):",  # a crash outside logging is an error too
        '  File "<string>", line 1, in <module>',
        "ZeroDivisionError: division by zero",
    ]


def test_lines_split_across_reads_are_joined_first() -> None:
    lines = ErrorLines()
    pieces = [LOG[i : i + 7] for i in range(0, len(LOG), 7)]
    assert [line for piece in pieces for line in lines.feed(piece)] == ErrorLines().feed(LOG)


def test_json_records_have_their_level_read() -> None:
    record = {"time": "t", "level": "error", "logger": "modelplane.server", "message": "boom"}
    assert record_level(json.dumps(record)) == "ERROR"
    assert record_level(json.dumps({**record, "level": "info"})) == "INFO"
    assert record_level("{not json") is None
    assert record_level("  File x") is None


def test_a_followed_log_reads_only_what_was_added(tmp_path: Path) -> None:
    path = tmp_path / "server.log"
    followed = FollowedLog(path)
    assert followed.new_errors() == []  # not written yet
    path.write_bytes("2026-12-06 04:21:24,815 ERROR x: caf\u00e9".encode()[:-1])  # half a char
    assert followed.new_errors() == []  # no whole line yet
    with path.open("ab") as f:
        f.write("\u00e9".encode()[1:] + b"\n2026-12-06 04:21:24,816 INFO x: fine\n")
    assert followed.new_errors() == ["2026-12-06 04:21:24,815 ERROR x: caf\u00e9"]
    assert followed.new_errors() == []
    assert tail(path, 1) == ["2026-12-06 04:21:24,816 INFO x: fine"]
    assert tail(tmp_path / "missing.log") == []


@pytest.fixture
def children() -> Iterator[list[Child]]:
    procs = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in "ab"]
    chat = LocalModel(name="chat", model="/m", replicas=2)
    made = [Child(Replica(chat, 8001 + i), p) for i, p in enumerate(procs)]
    yield made
    for p in procs:
        p.kill()
        p.wait()


def test_readiness_changes_are_told_once_each(children: list[Child]) -> None:
    a, b = (c.replica.url for c in children)
    first = ready_changes(children, {a})
    assert len(first) == 1 and first[0].startswith("chat:8001 is ready (loaded in ")
    assert ready_changes(children, {a}) == []
    assert ready_changes(children, {a, b})[0].startswith("chat:8002 is ready (loaded in ")
    assert ready_changes(children, {b}) == ["chat:8001 stopped answering its health checks"]
    assert ready_changes(children, {a, b}) == ["chat:8001 is ready again"]


def test_the_build_shows_a_conversion_and_not_a_verified_build(
    capsys: pytest.CaptureFixture[str],
) -> None:
    verified = BuildProgress(verbose=False)
    verified("checking /m")
    verified("model already built and verified; nothing to do")
    assert capsys.readouterr().out == ""
    converting = BuildProgress(verbose=False)
    for message in ("checking /m", "[1/4] loading libraries", "model written to /m"):
        converting(message)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Converting the model SmolLM2-135M-Instruct")
    assert out[1:] == ["  [1/4] loading libraries", "  model written to /m"]


def test_quiet_logging_keeps_warnings_and_access_lines_and_drops_start_stop_chatter() -> None:
    quiet = local_logging_config("text", verbose=False)["loggers"]
    assert quiet["uvicorn.error"]["level"] == "WARNING"
    assert quiet["modelplane.gateway"]["level"] == "WARNING"
    assert quiet["modelplane.gateway.access"]["level"] == "INFO"
    verbose = local_logging_config("text", verbose=True)["loggers"]
    assert verbose["uvicorn.error"]["level"] == "INFO" and "modelplane.gateway" not in verbose
