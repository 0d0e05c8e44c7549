"""`modelplane serve`: the OpenAI-compatible model server on the vLLM engine."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from modelplane.server.options import OptionsError, add_serve_arguments, options_from_args


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="Serve a model over the OpenAI API (vLLM engine).",
        description="Serve one model over the OpenAI API with the vLLM engine. /health is "
        "liveness, /ready is readiness (weights loaded and a warm-up request served), "
        "/metrics is Prometheus. SIGTERM drains in-flight requests before exiting.",
    )
    add_serve_arguments(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        options = options_from_args(args)
    except OptionsError as err:
        print(f"modelplane serve: {err}", file=sys.stderr)
        return 2
    from modelplane.server.runner import serve

    code = serve(options)
    # Everything is shut down by now. Skip interpreter teardown: vLLM's and
    # triton's finalizers only add noise (and seconds) to a clean exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
