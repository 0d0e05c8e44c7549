"""The start-up phases from the server's clock and the engine's log records (pure parts)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from modelplane.server.startup_phases import (
    PHASES,
    EngineMark,
    EngineMarkHandler,
    StartupClock,
    engine_mark,
    phases_line,
    process_start_time,
    read_marks,
    startup_phases,
    total_seconds,
)

# vLLM 0.32's messages, as its loggers render them.
LOAD_START = "Starting to load model /models/smollm2..."
WEIGHTS = "Loading weights took 3.25 seconds"
INIT_EAGER = "init engine (profile, create kv cache, warmup model) took 2.50 s"
INIT_COMPILED = (
    "init engine (profile, create kv cache, warmup model) took 60.00 s (compilation: 45.50 s)"
)
GRAPHS = "Graph capturing finished in 7 secs, took 0.52 GiB"


def test_engine_messages_that_mark_a_step_are_recognised_with_their_figures() -> None:
    assert engine_mark(LOAD_START, 1.0) == EngineMark("load_start", 1.0)
    assert engine_mark(WEIGHTS, 2.0) == EngineMark("weights_loaded", 2.0, (3.25,))
    assert engine_mark(INIT_EAGER, 3.0) == EngineMark("engine_initialized", 3.0, (2.5,))
    assert engine_mark(INIT_COMPILED, 3.0) == EngineMark("engine_initialized", 3.0, (60.0, 45.5))
    assert engine_mark(GRAPHS, 4.0) == EngineMark("graphs_captured", 4.0, (7.0,))
    assert engine_mark("Warming up model for the compilation...", 4.0) == EngineMark(
        "cpu_compile_start", 4.0
    )
    assert engine_mark("Warming up done.", 5.0) == EngineMark("cpu_compile_done", 5.0)
    assert engine_mark("Encoder graph capturing finished in 3 secs", 4.0) is None
    assert engine_mark("Using max model len 2048", 5.0) is None


def clock() -> StartupClock:
    return StartupClock(
        process_started=100.0,
        serve_entered=103.0,
        engine_configured=110.0,
        engine_returned=141.0,
        ready=145.0,
    )


def test_an_eager_start_has_every_phase_but_compile_and_they_add_up_to_the_total() -> None:
    marks = [
        EngineMark("load_start", 125.0),
        EngineMark("weights_loaded", 130.0, (3.0,)),
        EngineMark("engine_initialized", 140.0, (9.5,)),
    ]
    phases = startup_phases(clock(), marks)
    assert phases == {
        "process": 3.0,
        "config": 7.0,
        "engine_start": 15.0,
        "weights_locate": 2.0,
        "weights_load": 3.0,
        "kv_cache": 10.0,
        "ready": 5.0,
    }
    assert list(phases) == [p for p in PHASES if p in phases]
    assert sum(phases.values()) == total_seconds(clock()) == 45.0


def test_compilation_and_graph_capture_are_taken_out_of_the_engine_initialisation() -> None:
    marks = [
        EngineMark("load_start", 112.0),
        EngineMark("weights_loaded", 114.0, (1.0,)),
        EngineMark("graphs_captured", 135.0, (4.0,)),
        EngineMark("engine_initialized", 140.0, (26.0, 20.0)),
    ]
    phases = startup_phases(clock(), marks)
    assert phases["compile"] == 24.0
    assert phases["kv_cache"] == 2.0
    assert sum(phases.values()) == 45.0


def test_on_cpus_the_compiling_warm_up_run_is_the_compilation() -> None:
    marks = [
        EngineMark("load_start", 112.0),
        EngineMark("weights_loaded", 114.0, (1.0,)),
        EngineMark("cpu_compile_start", 115.0),
        EngineMark("cpu_compile_done", 136.5),
        EngineMark("engine_initialized", 140.0, (26.0,)),  # no compilation figure on CPUs
    ]
    phases = startup_phases(clock(), marks)
    assert phases["compile"] == 21.5
    assert phases["kv_cache"] == 4.5
    assert sum(phases.values()) == 45.0


def test_a_phase_whose_marks_are_missing_is_left_out_not_reported_as_zero() -> None:
    phases = startup_phases(clock(), [])
    # Without the engine's records only the server's own steps are known; ready then
    # counts from the engine client's return.
    assert phases == {"process": 3.0, "config": 7.0, "ready": 4.0}
    unknown_start = StartupClock(serve_entered=103.0, ready=145.0)
    assert startup_phases(unknown_start, []) == {}
    assert total_seconds(unknown_start) == 42.0


def test_the_log_line_names_each_phase_and_the_total() -> None:
    line = phases_line({"process": 0.44, "weights_load": 3.06}, 37.21)
    assert line == "startup phases: process=0.4s weights_load=3.1s total=37.2s"


def test_the_handler_appends_marks_while_its_file_exists_and_drops_them_after(
    tmp_path: Path,
) -> None:
    path = tmp_path / "marks.jsonl"
    path.touch()
    logger = logging.getLogger("vllm.test_startup_phases")
    handler = EngineMarkHandler(str(path))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        logger.info("Loading weights took %.2f seconds", 1.5)
        logger.info("something else")
        path.write_text(path.read_text() + "not json\n")
        marks = read_marks(path)
        assert [(m.name, m.figures) for m in marks] == [("weights_loaded", (1.5,))]
        path.unlink()
        logger.info(LOAD_START)
        assert not path.exists()
    finally:
        logger.removeHandler(handler)


def test_the_process_start_is_read_from_the_kernel_and_lies_in_the_past() -> None:
    started = process_start_time()
    if not Path("/proc/self/stat").exists():
        pytest.skip("no /proc here")
    assert started is not None
    assert 0 < time.time() - started < 24 * 3600
