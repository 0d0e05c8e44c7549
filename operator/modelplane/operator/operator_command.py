"""`modelplane operator`: run the LLMDeployment operator (kopf) with a config file.

The command validates the config, passes its path to the handlers through
MODELPLANE_OPERATOR_CONFIG and runs kopf's own CLI with `kopf_args`: the
tests run the same arguments through `kopf.testing.KopfRunner`, so what they
exercise is what the image runs. kopf is imported only when the command runs.

It starts kopf once the cluster serves the LLMDeployment API (api_wait.py):
watching chosen namespaces, kopf would never notice a CRD created later.

One replica runs standalone. Several replicas (`--peering NAME`) find each
other through kopf's peering object and only the one with the highest
priority works; kopf freezes *every* operator whose priority ties with
another's, so each process draws a random priority unless `--priority` is
given. kopf pauses only its own handlers; the operator's loops (resync,
autoscaler, canary analysis) check the same peering object themselves
(kube/peering.py), looking this replica up by its $POD_ID.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import socket
import sys
from pathlib import Path
from typing import Any, Final

from modelplane.operator.kube.peering import POD_ID_ENV

HANDLERS_MODULE = "modelplane.operator.handlers"
LOG_LEVELS: Final = ("debug", "info", "warning")  # what kopf's logging offers
# kopf's own flags for each level: --verbose logs kopf's debug details, --quiet warnings only.
KOPF_LOG_FLAGS: Final[dict[str, list[str]]] = {
    "debug": ["--verbose"],
    "info": [],
    "warning": ["--quiet"],
}
# Replicas draw their peering priority from this range: wide enough that a tie (which
# freezes both) practically never happens. To pause them all from a workstation:
# `kopf freeze --peering NAME --priority 2147483647 --lifetime SECONDS`.
PRIORITY_RANGE: Final = (1, 2**30)


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
    parser.add_argument(
        "--log-level", choices=LOG_LEVELS, default="info", help="Least severe messages logged."
    )
    parser.add_argument(
        "--verbose", action="store_true", help="Log kopf's debug details (--log-level debug)."
    )
    parser.add_argument(
        "--peering",
        metavar="NAME",
        help="Run as one of several replicas, only one active: the kopf peering object NAME "
        "(a ClusterKopfPeering when watching all namespaces, else a KopfPeering in each watched "
        "namespace; the chart creates it). Without it the operator runs standalone.",
    )
    parser.add_argument(
        "--priority",
        type=int,
        help="Peering priority: the live replica with the highest one is active. Default: "
        "random, because kopf pauses every replica whose priority ties with another's.",
    )
    parser.set_defaults(handler=run)


def kopf_args(
    config: Any,
    *,
    verbose: bool = False,
    log_level: str = "info",
    peering: str | None = None,
    priority: int | None = None,
) -> list[str]:
    """kopf CLI arguments for `config` (an OperatorConfig); standalone unless `peering`."""
    args = ["run", "-m", HANDLERS_MODULE, f"--log-format={config.log_format}"]
    if peering is None:
        args.append("--standalone")
    else:
        args += ["--peering", peering]
        if priority is not None:
            args += ["--priority", str(priority)]
    if config.namespaces:
        for namespace in config.namespaces:
            args += ["--namespace", namespace]
    else:
        args.append("--all-namespaces")
    if config.health_port is not None:
        args += ["--liveness", f"http://0.0.0.0:{config.health_port}/healthz"]
    args += KOPF_LOG_FLAGS["debug" if verbose else log_level]
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
    from modelplane.operator.api_wait import wait_for_llmdeployment_api

    # kopf looks for the resources it serves only as it starts (watching chosen namespaces).
    wait_for_llmdeployment_api(config.health_port)
    from kopf.cli import main as kopf_main

    priority = args.priority
    if args.peering is not None:
        if priority is None:
            priority = random.randint(*PRIORITY_RANGE)
        # kopf records this replica under $POD_ID (the chart sets the pod's name); the
        # operator's own loops look their record up by it, so it must be known, not drawn.
        os.environ.setdefault(POD_ID_ENV, f"{socket.gethostname()}-{secrets.token_hex(4)}")
    kopf_main.main(
        args=kopf_args(
            config,
            verbose=args.verbose,
            log_level=args.log_level,
            peering=args.peering,
            priority=priority,
        ),
        prog_name="modelplane operator",
        standalone_mode=False,
    )
    return 0
