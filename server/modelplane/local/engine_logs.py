"""The model servers' output in log files, and the errors in it on the terminal.

Local mode writes each `modelplane serve` process's stdout and stderr (the
engine's own lines among them: vLLM's configuration, its warnings about
Triton, NUMA or LD_PRELOAD, progress bars) to a file, and the supervisor
follows the file: a record logged at ERROR or CRITICAL, with the lines that
continue it (a traceback), and a Python traceback printed outside logging
are passed on to the terminal. Everything else stays in the file, whose
path is printed.

The servers log in modelplane's own formats (`modelplane.http.logs`): text
lines start with a timestamp and the level, JSON lines are objects with a
`level` field.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from pathlib import Path

_TEXT_RECORD = re.compile(
    r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
)
# Python's own report of an uncaught exception, or of one it ignored, outside logging.
_BARE_ERROR_STARTS = ("Traceback (most recent call last):", "Exception ignored in")
ERROR_LEVELS = frozenset({"ERROR", "CRITICAL"})


def record_level(line: str) -> str | None:
    """The level of a log record that starts on this line; None for a continuation line."""
    if match := _TEXT_RECORD.match(line):
        return match.group(1)
    if line.startswith("{"):
        try:
            entry = json.loads(line)
        except ValueError:
            return None
        level = entry.get("level") if isinstance(entry, dict) else None
        return level.upper() if isinstance(level, str) else None
    if line.startswith(_BARE_ERROR_STARTS):
        return "ERROR"
    return None


class ErrorLines:
    """Fed a log's text in any pieces, returns the lines of its error records."""

    def __init__(self) -> None:
        self._partial = ""
        self._in_error = False

    def feed(self, text: str) -> list[str]:
        *lines, self._partial = (self._partial + text).split("\n")
        errors = []
        for line in lines:
            level = record_level(line)
            if level is not None:
                self._in_error = level in ERROR_LEVELS
            if self._in_error:
                errors.append(line.rstrip("\r"))
        return errors


class FollowedLog:
    """A log file read as it grows (it may not exist yet), through `ErrorLines`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._errors = ErrorLines()

    def new_errors(self) -> list[str]:
        try:
            with self.path.open("rb") as f:
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return []
        self._offset += len(data)
        return self._errors.feed(self._decoder.decode(data))


def tail(path: Path, lines: int = 25, max_bytes: int = 64 * 1024) -> list[str]:
    """The last `lines` lines of a file (empty if it cannot be read)."""
    try:
        with path.open("rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def indented(lines: list[str], prefix: str = "  ") -> Iterator[str]:
    return (f"{prefix}{line}" for line in lines)
