"""Structured logs: one JSON object per line, for the server and the engine alike.

The same configuration is handed to vLLM through `VLLM_LOGGING_CONFIG_PATH`,
so lines from the engine process come out in the same shape as ours.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import tempfile
import time
from typing import Any

_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


class JsonFormatter(logging.Formatter):
    """Render a record and its `extra={...}` fields as one JSON line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def logging_config(log_format: str, level: str = "INFO") -> dict[str, Any]:
    formatter: dict[str, Any] = (
        {"()": f"{__name__}.JsonFormatter"}
        if log_format == "json"
        else {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    handler = {"class": "logging.StreamHandler", "formatter": "main", "stream": "ext://sys.stderr"}
    named = {"level": level, "handlers": ["main"], "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatter},
        "handlers": {"main": handler},
        "root": {"level": level, "handlers": ["main"]},
        "loggers": {
            "vllm": named,
            "modelplane": named,
            "uvicorn": named,
            "uvicorn.error": {"level": level, "propagate": True},
            "uvicorn.access": {"level": "WARNING", "propagate": True},
        },
    }


def configure_logging(
    log_format: str, vllm_handlers: dict[str, dict[str, Any]] | None = None
) -> None:
    """Configure this process, and export the config for the vLLM engine process.

    `vllm_handlers`: more handlers (name -> dictConfig entry) for the `vllm`
    loggers, in this process and the engine's (the start-up phases' marks)."""
    config = logging_config(log_format)
    if vllm_handlers:
        config["handlers"].update(vllm_handlers)
        vllm = config["loggers"]["vllm"]  # shared with other loggers: replaced, not changed
        config["loggers"]["vllm"] = {**vllm, "handlers": [*vllm["handlers"], *vllm_handlers]}
    logging.config.dictConfig(config)
    fd, path = tempfile.mkstemp(prefix="modelplane-logging-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(config, f)
    os.environ["VLLM_CONFIGURE_LOGGING"] = "1"
    os.environ["VLLM_LOGGING_CONFIG_PATH"] = path
