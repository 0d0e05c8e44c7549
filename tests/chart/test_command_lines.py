"""The chart's containers run command lines the real `modelplane` CLI accepts and understands.

The operator's args go through `modelplane`'s own parser and its `operator`
handler, with the config file the chart writes; the kopf command line the
handler builds is then parsed by kopf's own (click) parser, so the watched
namespaces, peering and liveness port are checked where kopf reads them.
kopf itself is not started: no cluster runs here. The gateway's args go
through the same parser and the gateway's option model.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kopf.cli
import pytest
import yaml

from modelplane.api import contract
from modelplane.cli import build_parser
from modelplane.gateway.options import options_from_args
from modelplane.operator.config import CONFIG_ENV
from modelplane.operator.kube.peering import POD_ID_ENV
from modelplane.operator.operator_command import HANDLERS_MODULE
from tests.chart.helm import container, find, operator_config, render

CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "debug-namespaced": {
        "operator": {"logLevel": "debug", "watchNamespaces": ["ml-a", "ml-b"], "healthPort": 9001}
    },
    "two-replicas": {"operator": {"replicas": 2, "logLevel": "warning", "peeringName": "mp"}},
    "two-replicas-namespaced": {"operator": {"replicas": 2, "watchNamespaces": ["ml-a"]}},
}
LOG_FLAGS = {"debug": "verbose", "warning": "quiet"}


def kopf_command_line(
    docs: list[dict[str, Any]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """Run the operator container's command up to the point where it hands over to kopf."""
    operator = container(docs, "-operator")
    assert operator["command"] == ["modelplane"]
    mount = next(m for m in operator["volumeMounts"] if m["name"] == "config")["mountPath"]
    local = tmp_path / "etc"
    local.mkdir(parents=True)
    (local / "operator.yaml").write_text(yaml.safe_dump(operator_config(docs)))
    argv = [arg.replace(mount, str(local)) for arg in operator["args"]]

    args = build_parser().parse_args(argv)
    assert args.handler.__module__ == "modelplane.operator.operator_command"
    calls: list[list[str]] = []
    monkeypatch.setattr(kopf.cli.main, "main", lambda args, **_: calls.append(list(args)))
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.delenv(POD_ID_ENV, raising=False)  # the pod's name, from the chart's env
    assert args.handler(args) == 0
    (kopf_argv,) = calls
    return kopf_argv


@pytest.mark.parametrize("case", sorted(CASES))
def test_operator_args_reach_kopf_as_the_values_say(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = CASES[case]
    docs = render(values)
    kopf_argv = kopf_command_line(docs, tmp_path, monkeypatch)
    assert kopf_argv[0] == "run"
    params = kopf.cli.run.make_context("kopf run", kopf_argv[1:]).params

    operator = values.get("operator", {})
    namespaces = operator.get("watchNamespaces", [])
    assert params["modules"] == (HANDLERS_MODULE,)
    assert tuple(params["namespaces"]) == tuple(namespaces)
    assert params["clusterwide"] is (not namespaces)
    if operator.get("replicas", 1) > 1:
        (peering,) = [d for d in docs if d["apiVersion"] == "kopf.dev/v1"]
        assert params["peering_name"] == peering["metadata"]["name"]
        assert params["standalone"] is None
        assert isinstance(params["priority"], int) and params["priority"] > 0
        assert os.environ[POD_ID_ENV]  # kopf's name for the replica, known to its loops too
    else:
        assert params["peering_name"] is None and params["standalone"] is True
    # kopf serves liveness where the pod's probe looks for it.
    probe = container(docs, "-operator")["livenessProbe"]["httpGet"]
    ports = {p["name"]: p["containerPort"] for p in container(docs, "-operator")["ports"]}
    assert params["liveness_endpoint"] == f"http://0.0.0.0:{ports[probe['port']]}{probe['path']}"
    level = operator.get("logLevel", "info")
    for name in ("verbose", "quiet"):
        assert params[name] is (LOG_FLAGS.get(level) == name)


def test_two_peered_replicas_never_tie(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kopf freezes every replica whose priority equals another's: each draws its own."""
    docs = render(CASES["two-replicas"])
    priorities = set()
    for attempt in range(5):
        argv = kopf_command_line(docs, tmp_path / str(attempt), monkeypatch)
        priorities.add(kopf.cli.run.make_context("kopf run", argv[1:]).params["priority"])
    assert len(priorities) == 5


GATEWAY_CASES: dict[str, dict[str, Any]] = {
    "defaults": {"gateway": {"enabled": True}},
    "everything": {
        "operator": {"watchNamespaces": ["ml-a", "ml-b"]},
        "gateway": {
            "enabled": True,
            "apiKeys": {"secretName": "llm-keys", "secretKey": "gateway-keys"},
            "defaultRouting": "prefix",
            "holdTimeoutSeconds": 30.5,
            "requestsPerMinute": 600,
            "tokensPerMinute": 100000,
            "drainTimeoutSeconds": 45,
            "logFormat": "text",
            "accessLog": True,
            "otlpTracesEndpoint": "http://otel-collector.monitoring:4318",
            "extraArgs": ["--max-attempts=2", "--read-timeout", "300"],
        },
    },
}


@pytest.mark.parametrize("case", sorted(GATEWAY_CASES))
def test_gateway_args_parse_into_the_options_the_values_say(case: str) -> None:
    values = GATEWAY_CASES[case]
    docs = render(values)
    gateway = container(docs, "-gateway")
    assert gateway["command"] == ["modelplane"]
    args = build_parser().parse_args(gateway["args"])
    assert args.handler.__module__ == "modelplane.gateway.gateway_command"
    options = options_from_args(args)

    assert (options.discovery, options.host) == ("kubernetes", "0.0.0.0")
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert options.port == ports["http"] == contract.GATEWAY_PORT
    metrics = ports[contract.GATEWAY_METRICS_PORT_NAME]
    assert options.metrics_port == metrics == contract.GATEWAY_METRICS_PORT != options.port
    assert options.namespaces == tuple(values.get("operator", {}).get("watchNamespaces", []))
    settings = values["gateway"]
    assert options.default_routing.value == settings.get("defaultRouting", "least-load")
    assert options.hold_timeout == settings.get("holdTimeoutSeconds", 120)
    assert options.requests_per_minute == settings.get("requestsPerMinute")
    assert options.tokens_per_minute == settings.get("tokensPerMinute")
    assert options.log_format == settings.get("logFormat", "json")
    assert options.access_log is settings.get("accessLog", False)
    assert options.otlp_traces_endpoint == (settings.get("otlpTracesEndpoint") or None)
    drain = settings.get("drainTimeoutSeconds", 30)
    assert options.drain_timeout == drain
    pod = find(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]
    pause = int(gateway["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > drain + pause
    if "apiKeys" in settings:
        mount = next(m for m in gateway["volumeMounts"] if m["name"] == "api-keys")
        assert str(options.api_key_file).startswith(mount["mountPath"] + "/")
    else:
        assert options.api_key_file is None
    if case == "everything":
        assert (options.max_attempts, options.read_timeout) == (2, 300)
