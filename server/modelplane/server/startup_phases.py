"""Where a server's start-up went: its phases on one clock, from the process start to ready.

The server takes its own times (`StartupClock`): when the process started
(from the kernel's record of it), when `serve` began, when the engine's
configuration was resolved and when the server turned ready. The engine's
own steps happen in other processes (vLLM's EngineCore and its worker), so
their times come from the engine's log records: a logging handler
(`EngineMarkHandler`, installed in every vLLM process through the shared
logging config) appends the few records that mark a step, with the time the
record was made, to a file the server reads when it turns ready.

Phases, in order (each the time between two marks; one whose marks are
missing is left out, never reported as 0):

- `process`: process start -> `serve` entered (interpreter, imports, flags).
- `config`: -> engine configuration resolved (vLLM import, model config).
- `engine_start`: -> the worker starts to load the model (engine processes
  spawned and initialised).
- `weights_locate`: -> the weights start to be read (the model's modules
  built, the checkpoint files found or downloaded).
- `weights_load`: the weights read into the model ("Loading weights took").
- `compile`: torch.compile and graph capture, as the engine counts them
  (on GPUs) or the CPU worker's compiling warm-up run (on CPUs); absent in
  eager mode.
- `kv_cache`: the rest of the engine's initialisation after the weights:
  memory profiling, KV cache allocation, warm-up runs.
- `ready`: engine initialised -> ready (API app built, warm-up request served).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PHASES = (
    "process",
    "config",
    "engine_start",
    "weights_locate",
    "weights_load",
    "compile",
    "kv_cache",
    "ready",
)

# The engine's log records that mark a step (vLLM 0.32's messages), by mark name.
_MARKS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("load_start", re.compile(r"^Starting to load model ")),
    ("weights_loaded", re.compile(r"^Loading weights took ([0-9.]+) seconds")),
    # The CPU worker compiles in a warm-up run of its own, which it brackets with these.
    ("cpu_compile_start", re.compile(r"^Warming up model for the compilation\.\.\.")),
    ("cpu_compile_done", re.compile(r"^Warming up done\.")),
    ("graphs_captured", re.compile(r"^Graph capturing finished in ([0-9.]+) secs")),
    (
        "engine_initialized",
        re.compile(
            r"^init engine \(profile, create kv cache, warmup model\) took ([0-9.]+) s"
            r"(?: \(compilation: ([0-9.]+) s)?"
        ),
    ),
)


@dataclass(frozen=True)
class EngineMark:
    """One engine step: its name, when it was logged (epoch s), the figures in the message."""

    name: str
    at: float
    figures: tuple[float, ...] = ()


def engine_mark(message: str, at: float) -> EngineMark | None:
    """The mark this engine log message makes, or None for any other message."""
    for name, pattern in _MARKS:
        if match := pattern.match(message):
            figures = tuple(float(g) for g in match.groups() if g is not None)
            return EngineMark(name, at, figures)
    return None


class EngineMarkHandler(logging.Handler):
    """Appends the engine's marking records to `path`, one JSON object a line.

    Runs in every vLLM process (the logging config names it), so it only
    appends, with one write per line; once the server has read and removed the
    file, later records are dropped rather than creating it again."""

    def __init__(self, path: str, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.path = path

    def emit(self, record: logging.LogRecord) -> None:
        try:
            mark = engine_mark(record.getMessage(), record.created)
            if mark is None:
                return
            line = json.dumps({"name": mark.name, "at": mark.at, "figures": mark.figures})
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)
        except FileNotFoundError:
            return
        except Exception:
            self.handleError(record)


def read_marks(path: Path) -> list[EngineMark]:
    """The marks in the file `EngineMarkHandler` wrote (a malformed line is skipped)."""
    marks = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            entry = json.loads(line)
            marks.append(
                EngineMark(
                    str(entry["name"]),
                    float(entry["at"]),
                    tuple(float(f) for f in entry["figures"]),
                )
            )
        except (ValueError, KeyError, TypeError):
            continue
    return marks


@dataclass
class StartupClock:
    """The server's own times (epoch seconds) of the steps it sees itself."""

    process_started: float | None = None
    serve_entered: float | None = None
    engine_configured: float | None = None
    engine_returned: float | None = None
    ready: float | None = None

    def now(self) -> float:
        return time.time()


def process_start_time() -> float | None:
    """When this process started (epoch seconds), from /proc; None where that is not known.

    The kernel records the start in clock ticks since boot, so the process's
    age is the boot clock now less that: exact to a tick (10 ms), unlike
    psutil's create_time, which adds the boot time /proc gives in whole seconds."""
    try:
        stat = Path("/proc/self/stat").read_text()
        # Fields after the command name (which may hold spaces) start at field 3.
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks = int(fields[19])  # field 22: starttime
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return time.time() - age if age >= 0 else None


def _last(marks: Iterable[EngineMark], name: str) -> EngineMark | None:
    found = [m for m in marks if m.name == name]
    return max(found, key=lambda m: m.at) if found else None


def _first(marks: Iterable[EngineMark], name: str) -> EngineMark | None:
    found = [m for m in marks if m.name == name]
    return min(found, key=lambda m: m.at) if found else None


def _between(start: float | None, end: float | None) -> float | None:
    if start is None or end is None:
        return None
    # The engine rounds its figures to 10 ms: a step shorter than that may come out
    # a hair below zero.
    return max(end - start, 0.0)


def startup_phases(clock: StartupClock, marks: Iterable[EngineMark]) -> dict[str, float]:
    """Each known phase's seconds, in `PHASES` order; a phase with a missing mark is absent."""
    marks = list(marks)
    load_start = _first(marks, "load_start")
    loaded = _last(marks, "weights_loaded")
    initialized = _last(marks, "engine_initialized")
    graphs = _last(marks, "graphs_captured")
    cpu_start, cpu_done = _first(marks, "cpu_compile_start"), _last(marks, "cpu_compile_done")
    weights_start = loaded.at - loaded.figures[0] if loaded and loaded.figures else None
    compile_s: float | None = None
    if initialized is not None and len(initialized.figures) > 1:
        compile_s = initialized.figures[1]
    elif cpu_start is not None and cpu_done is not None:
        # vLLM counts no compilation time on CPUs: the warm-up run that compiles is it.
        compile_s = _between(cpu_start.at, cpu_done.at)
    if graphs is not None and graphs.figures:
        compile_s = (compile_s or 0.0) + graphs.figures[0]
    kv_cache = _between(loaded.at if loaded else None, initialized.at if initialized else None)
    if kv_cache is not None and compile_s is not None:
        kv_cache = max(kv_cache - compile_s, 0.0)
    engine_done = initialized.at if initialized else clock.engine_returned
    found = {
        "process": _between(clock.process_started, clock.serve_entered),
        "config": _between(clock.serve_entered, clock.engine_configured),
        "engine_start": _between(clock.engine_configured, load_start.at if load_start else None),
        "weights_locate": _between(load_start.at if load_start else None, weights_start),
        "weights_load": _between(weights_start, loaded.at if loaded else None),
        "compile": compile_s,
        "kv_cache": kv_cache,
        "ready": _between(engine_done, clock.ready),
    }
    return {name: value for name in PHASES if (value := found[name]) is not None}


def total_seconds(clock: StartupClock) -> float | None:
    """Process start (or, unknown, `serve` entered) to ready."""
    start = clock.process_started if clock.process_started is not None else clock.serve_entered
    return _between(start, clock.ready)


def phases_line(phases: Mapping[str, float], total: float | None) -> str:
    """The one log line: `startup phases: process=0.4s config=1.2s ... total=37.2s`."""
    parts = [f"{name}={seconds:.1f}s" for name, seconds in phases.items()]
    if total is not None:
        parts.append(f"total={total:.1f}s")
    return "startup phases: " + " ".join(parts)
