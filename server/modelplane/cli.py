"""The `modelplane` command line: one entry point, one module per subcommand.

Each module listed in `COMMAND_MODULES` exposes `register(subparsers)`, which
adds its parser and sets `handler` to a function taking the parsed
namespace and returning the exit code. Those modules import only argparse
and light helpers at import time, so `modelplane --help` stays fast; the
engine, kopf and the rest load when a command runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES: tuple[str, ...] = (
    "modelplane.server.serve_command",
    "modelplane.server.model_command",
    "modelplane.gateway.gateway_command",
    "modelplane.gateway.chat_command",
    "modelplane.gateway.usage_command",
    "modelplane.local.command",
    "modelplane.operator.operator_command",
    "modelplane.operator.render_command",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelplane",
        description="Run large language models as OpenAI-compatible endpoints.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    sys.exit(code)
