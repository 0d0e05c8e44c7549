"""`modelplane render -f FILE`: print the objects the operator would create, as YAML.

For GitOps and debugging: the same parsing, fit check and builders as the
operator, with no cluster. A spec the operator would mark Failed is refused
with the same one-line reasons (every problem of the file at once, an unknown
field with the closest known one), and exit code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "render",
        help="Print the Kubernetes objects an LLMDeployment becomes (YAML).",
        description="Render the children the operator would create for each LLMDeployment "
        "in FILE (Deployment, Service, PodDisruptionBudget, ConfigMap, NetworkPolicy, "
        "and a ServiceMonitor with --service-monitor), without owner references.",
    )
    parser.add_argument(
        "-f", "--filename", type=Path, required=True, help="YAML with LLMDeployments ('-': stdin)."
    )
    parser.add_argument("--config", type=Path, help="Operator config YAML (defaults otherwise).")
    parser.add_argument(
        "-n", "--namespace", default="default", help="Namespace where the file sets none."
    )
    parser.add_argument(
        "--service-monitor",
        action="store_true",
        help="Include the ServiceMonitor, as on a cluster with the Prometheus Operator.",
    )
    parser.set_defaults(handler=run)


def _block_dumper() -> Any:
    import yaml

    class BlockDumper(yaml.SafeDumper):
        """Multi-line strings (the server's settings file) as readable `|` blocks."""

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    BlockDumper.add_representer(str, text)
    return BlockDumper


class RenderError(Exception):
    """Why nothing was rendered: one line per problem, every problem of the file."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def render(
    documents: list[Any], config: Any, *, namespace: str, service_monitor_api: bool
) -> list[dict[str, Any]]:
    """The children of every LLMDeployment in `documents`; RenderError with every problem
    of every one of them (not just the first) when any is not servable."""
    from modelplane.api import contract
    from modelplane.operator.builders import BuildOptions, build_children
    from modelplane.operator.reconcile.parsing import parse_spec
    from modelplane.operator.reconcile.replicas import deployment_replicas

    objects: list[dict[str, Any]] = []
    problems: list[str] = []
    found = 0
    for number, doc in enumerate(documents, start=1):
        if not isinstance(doc, dict) or doc.get("kind") != contract.KIND:
            continue
        found += 1
        meta = doc.get("metadata") or {}
        name = str(meta.get("name", "")) if isinstance(meta, dict) else ""
        if not name:
            problems.append(f"document {number}: the {contract.KIND} has no metadata.name")
        parsed = parse_spec(name or "unnamed", doc.get("spec"), config)
        if parsed.spec is None or parsed.problems:
            problems += [f"{name or f'document {number}'}: {p}" for p in parsed.problems]
            continue
        if problems:
            continue  # only checking the rest: nothing is rendered
        options = BuildOptions(
            replicas=deployment_replicas(parsed.spec),
            service_monitor_api=service_monitor_api,
        )
        objects += build_children(
            name, meta.get("namespace") or namespace, parsed.spec, config, options
        )
    if problems:
        raise RenderError(problems)
    if not found:
        raise RenderError([f"no {contract.KIND} found"])
    return objects


def run(args: argparse.Namespace) -> int:
    import yaml

    from modelplane.operator.config import ConfigError, load_config

    try:
        config = load_config(args.config)
        text = sys.stdin.read() if str(args.filename) == "-" else args.filename.read_text()
        documents = list(yaml.safe_load_all(text))
        objects = render(
            documents,
            config,
            namespace=args.namespace,
            service_monitor_api=args.service_monitor,
        )
    except ConfigError as err:
        print(f"modelplane render: {err}", file=sys.stderr)
        return 2
    except RenderError as err:
        for problem in err.problems:
            print(f"modelplane render: {problem}", file=sys.stderr)
        if len(err.problems) > 1:
            print(
                f"modelplane render: {len(err.problems)} problems in {args.filename}; "
                "nothing rendered",
                file=sys.stderr,
            )
        return 2
    except OSError as err:
        print(f"modelplane render: cannot read {args.filename}: {err.strerror}", file=sys.stderr)
        return 2
    except yaml.YAMLError as err:
        print(f"modelplane render: {args.filename} is not valid YAML: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(yaml.dump_all(objects, Dumper=_block_dumper(), sort_keys=False))
    return 0
