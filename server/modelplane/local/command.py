"""`modelplane local`: model servers and the gateway on this machine, one command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from modelplane.api import contract
from modelplane.gateway.options import GatewayOptions, OptionsError


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "local",
        help="Run model servers and the gateway on this machine (what `make run` does).",
        description="Start one `modelplane serve` process per model replica listed in a "
        "YAML file (default: the packaged SmolLM2 test model) and the gateway in front of "
        "them, with the chat page at /. The terminal shows progress and errors; each "
        "server's full output goes to a log file (--verbose shows it instead). Ctrl-C stops "
        "everything, draining requests first.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="YAML file listing the local models (name, model, args, replicas, port, routing).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="Gateway address (127.0.0.1).")
    parser.add_argument(
        "--port",
        type=int,
        default=8000,
        help="Gateway port (8000); model servers take the ports after it.",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=contract.GATEWAY_METRICS_PORT,
        help=f"Port of the gateway's GET /metrics ({contract.GATEWAY_METRICS_PORT}); "
        "the API's port has none.",
    )
    parser.add_argument("--api-key-file", type=Path, help="API keys the gateway requires.")
    parser.add_argument(
        "--hold-timeout",
        type=float,
        default=300.0,
        help="Seconds a request waits for its model to finish loading (300).",
    )
    parser.add_argument("--drain-timeout", type=float, default=30.0, help="Drain on stop (30 s).")
    parser.add_argument("--log-format", choices=("json", "text"), default="text")
    parser.add_argument("--access-log", action="store_true", help="Log every request.")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="Show the model servers' and the engine's own output on the terminal, and "
        "the gateway's start and stop lines (by default the servers' output goes to a log "
        "file per server, and only its errors reach the terminal).",
    )
    parser.add_argument(
        "--log-dir",
        type=Path,
        help="Folder for the model servers' log files (default: a new temporary folder; "
        "its path is printed).",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        options = GatewayOptions(
            host=args.host,
            port=args.port,
            metrics_port=args.metrics_port,
            api_key_file=args.api_key_file,
            hold_timeout=args.hold_timeout,
            drain_timeout=args.drain_timeout,
            log_format=args.log_format,
            access_log=args.access_log,
            health_interval=0.5,
        )
    except ValueError as err:
        print(f"modelplane local: {OptionsError(str(err))}", file=sys.stderr)
        return 2
    from modelplane.local.stack import run_local_mode

    return run_local_mode(options, args.config, verbose=args.verbose, log_dir=args.log_dir)
