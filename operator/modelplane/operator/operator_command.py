"""`modelplane operator`: run the LLMDeployment operator (kopf) with a config file.

The command validates the config, passes its path to the handlers through
MODELPLANE_OPERATOR_CONFIG and runs kopf's own CLI with `kopf_args`: the
tests run the same arguments through `kopf.testing.KopfRunner`, so what they
exercise is what the image runs. kopf is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

HANDLERS_MODULE = "modelplane.operator.handlers"


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "operator",
        help="Run the LLMDeployment operator (kopf).",
        description="Reconcile LLMDeployment resources into model server Deployments, "
        "Services, PodDisruptionBudgets, ConfigMaps, NetworkPolicies and ServiceMonitors, "
        "and keep their status true. Credentials: the pod's service account, else the "
        "current kubeconfig context. Prometheus metrics on the configured metricsPort.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="YAML operator config (accelerator profiles, images, probes, namespaces, ports); "
        "every setting has a default.",
    )
    parser.add_argument("--verbose", action="store_true", help="Log kopf's debug details.")
    parser.set_defaults(handler=run)


def kopf_args(config: Any, *, verbose: bool = False) -> list[str]:
    """kopf CLI arguments for `config` (an OperatorConfig)."""
    args = ["run", "--standalone", "-m", HANDLERS_MODULE, f"--log-format={config.log_format}"]
    if config.namespaces:
        for namespace in config.namespaces:
            args += ["--namespace", namespace]
    else:
        args.append("--all-namespaces")
    if config.health_port is not None:
        args += ["--liveness", f"http://0.0.0.0:{config.health_port}/healthz"]
    if verbose:
        args.append("--verbose")
    return args


def run(args: argparse.Namespace) -> int:
    from modelplane.operator.config import CONFIG_ENV, ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as err:
        print(f"modelplane operator: {err}", file=sys.stderr)
        return 2
    if args.config is not None:
        os.environ[CONFIG_ENV] = str(args.config.resolve())
    else:
        os.environ.pop(CONFIG_ENV, None)
    from kopf.cli import main as kopf_main

    kopf_main.main(
        args=kopf_args(config, verbose=args.verbose),
        prog_name="modelplane operator",
        standalone_mode=False,
    )
    return 0
