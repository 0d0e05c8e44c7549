"""`modelplane gateway`: one OpenAI endpoint in front of every model."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from modelplane.gateway.options import OptionsError, add_gateway_arguments, options_from_args


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "gateway",
        help="Route OpenAI requests to the replicas of each model (load- and prefix-aware).",
        description="One OpenAI endpoint for every model: routes each request by its `model` "
        "to a ready replica, balancing by load or conversation prefix, retrying before the "
        "first byte, holding requests while a model scales up from zero. Serves a chat page "
        "at /; Prometheus metrics at /metrics on the metrics port (--metrics-port).",
    )
    add_gateway_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        options = options_from_args(args)
    except OptionsError as err:
        print(f"modelplane gateway: {err}", file=sys.stderr)
        return 2
    from modelplane.gateway.runner import run_gateway

    return run_gateway(options)
