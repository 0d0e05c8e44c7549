"""The chart's tenants values reach the gateway as the values say (issue 16).

The chart is rendered by the real helm binary; the gateway container's args
go through `modelplane`'s own parser and the gateway's option model, with
the environment the kubelet would give the container (env from a Secret
resolved to the Secret's value), and the real `modelplane gateway` process
is shown to read the Redis URL from the variable the chart sets. The tenants
Secret is laid out the way the kubelet mounts and updates a Secret volume
(tests/support/secret_volume.py) at the path the args name, and read by the
gateway's own tenants loader: a tenant's `keyFile` is found beside the
tenants file, and an updated Secret is seen by a reload without a restart.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from modelplane.cli import build_parser
from modelplane.gateway.options import REDIS_URL_ENV, GatewayOptions, options_from_args
from modelplane.gateway.tenants.config import TenantsFileWatch
from tests.chart.helm import container, find, render, template
from tests.conftest import MODELPLANE
from tests.support.secret_volume import SecretVolume

TENANTS_SECRET = "llm-tenants"
REDIS_SECRET = {"name": "redis-auth", "key": "redis-url"}
REDIS_URL = "redis://:s3cret@redis.infra:6379/0"
SECRETS = {(REDIS_SECRET["name"], REDIS_SECRET["key"]): REDIS_URL}


def gateway_values(**settings: Any) -> dict[str, Any]:
    return {"gateway": {"enabled": True, **settings}}


def kubelet_env(gateway: dict[str, Any]) -> dict[str, str]:
    """The container's environment as the kubelet sets it (Secret keys from SECRETS)."""
    env: dict[str, str] = {}
    for var in gateway.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = SECRETS[(ref["name"], ref["key"])]
    return env


def gateway_options(docs: list[dict[str, Any]]) -> GatewayOptions:
    gateway = container(docs, "-gateway")
    args = build_parser().parse_args(gateway["args"])
    return options_from_args(args, environ=kubelet_env(gateway))


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = find(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]
    return spec


def test_defaults_run_no_tenants_no_redis_and_no_queue() -> None:
    docs = render(gateway_values())
    options = gateway_options(docs)
    assert (options.tenants, options.redis_url, options.replica_concurrency) == (None, None, None)
    assert options.max_queued_per_tenant == 256
    assert "env" not in container(docs, "-gateway")
    assert [v["name"] for v in pod_spec(docs)["volumes"]] == ["tmp"]


CASES: dict[str, dict[str, Any]] = {
    "tenants": {"tenants": {"secretName": TENANTS_SECRET}},
    "tenants-own-key-queue": {
        "tenants": {"secretName": TENANTS_SECRET, "secretKey": "teams.yaml"},
        "replicaConcurrency": 8,
        "maxQueuedPerTenant": 32,
    },
    "redis-url": {
        "tenants": {"secretName": TENANTS_SECRET},
        "redis": {"url": "redis://redis.infra:6379/0"},
    },
    "redis-secret-closed": {
        "tenants": {"secretName": TENANTS_SECRET},
        "redis": {"urlSecret": REDIS_SECRET, "failure": "closed"},
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_tenant_values_parse_into_the_gateway_options_they_say(case: str) -> None:
    settings = CASES[case]
    docs = render(gateway_values(**settings))
    options = gateway_options(docs)
    gateway = container(docs, "-gateway")

    mount = next(m for m in gateway["volumeMounts"] if m["name"] == "tenants")
    key = settings["tenants"].get("secretKey", "tenants.yaml")
    assert options.tenants == Path(mount["mountPath"]) / key
    assert options.api_key_file is None
    redis = settings.get("redis", {})
    expected_url = redis.get("url") or (REDIS_URL if "urlSecret" in redis else None)
    assert options.redis_url == expected_url
    assert options.redis_failure == redis.get("failure", "open")
    assert options.replica_concurrency == settings.get("replicaConcurrency")
    assert options.max_queued_per_tenant == settings.get("maxQueuedPerTenant", 256)


def test_a_redis_url_from_a_secret_never_appears_in_the_pod_spec() -> None:
    docs = render(gateway_values(**CASES["redis-secret-closed"]))
    gateway = container(docs, "-gateway")
    assert gateway["env"] == [
        {
            "name": REDIS_URL_ENV,
            "valueFrom": {
                "secretKeyRef": {"name": REDIS_SECRET["name"], "key": REDIS_SECRET["key"]}
            },
        }
    ]
    assert not [a for a in gateway["args"] if a.startswith("--redis-url")]


def test_a_redis_url_flag_wins_over_the_environment() -> None:
    args = build_parser().parse_args(
        ["gateway", "--tenants", "t.yaml", "--redis-url", "redis://flag:6379/0"]
    )
    options = options_from_args(args, environ={REDIS_URL_ENV: "redis://env:6379/0"})
    assert options.redis_url == "redis://flag:6379/0"


def test_the_gateway_process_reads_the_redis_url_from_its_environment() -> None:
    """The real `modelplane gateway`, given the variable the chart sets but no tenants file,
    refuses to start naming both places a Redis URL comes from."""
    result = subprocess.run(
        [*MODELPLANE, "gateway", "--config", "unused.yaml"],
        env={**os.environ, REDIS_URL_ENV: "redis://redis.infra:6379/0"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"redis_url (--redis-url or {REDIS_URL_ENV})" in result.stderr
    assert "it needs tenants" in result.stderr


def test_the_tenants_secret_is_mounted_whole_read_only_and_updatable() -> None:
    """No items: every key of the Secret (the key files too) is in the folder. No subPath:
    a subPath mount is never updated by the kubelet, so a reload would never see a change."""
    pod = pod_spec(render(gateway_values(**CASES["tenants"])))
    gateway = pod["containers"][0]
    volume = next(v for v in pod["volumes"] if v["name"] == "tenants")
    assert volume["secret"] == {"secretName": TENANTS_SECRET}
    mount = next(m for m in gateway["volumeMounts"] if m["name"] == "tenants")
    assert mount["readOnly"] is True and "subPath" not in mount


TENANTS_FILE = """
tenants:
  team-a:
    keyFile: team-a.keys
    weight: 2
    budget: {tokens: 50000000, period: month}
  team-b:
    keys: [sk-team-b-000001]
"""


def test_key_files_beside_the_tenants_file_and_secret_updates_reach_the_gateway(
    tmp_path: Path,
) -> None:
    docs = render(gateway_values(**CASES["tenants"]))
    options = gateway_options(docs)
    mount = next(m for m in container(docs, "-gateway")["volumeMounts"] if m["name"] == "tenants")
    assert options.tenants is not None
    # The Secret's keys, laid out where the pod would see them.
    local = tmp_path / Path(mount["mountPath"]).relative_to("/")
    secret = SecretVolume(
        local, {"tenants.yaml": TENANTS_FILE, "team-a.keys": "sk-team-a-000001\n"}
    )
    watch = TenantsFileWatch(local / options.tenants.relative_to(mount["mountPath"]))
    team_a = watch.tenants.for_key("sk-team-a-000001")
    assert team_a is not None and (team_a.name, team_a.weight) == ("team-a", 2)

    # `kubectl apply` of the Secret with team-a's key rotated: the kubelet swaps it in.
    secret.update({"tenants.yaml": TENANTS_FILE, "team-a.keys": "sk-team-a-000002\n"})
    assert watch.reload()
    assert watch.tenants.for_key("sk-team-a-000001") is None
    rotated = watch.tenants.for_key("sk-team-a-000002")
    assert rotated is not None and rotated.name == "team-a"


REFUSED: list[tuple[dict[str, Any], str]] = [
    (
        {"apiKeys": {"secretName": "llm-keys"}, "tenants": {"secretName": TENANTS_SECRET}},
        "gateway.apiKeys.secretName and gateway.tenants.secretName are both set: give one",
    ),
    (
        {
            "tenants": {"secretName": TENANTS_SECRET},
            "redis": {"url": "redis://r:6379/0", "urlSecret": {"name": "redis-auth"}},
        },
        "gateway.redis.url and gateway.redis.urlSecret.name are both set: give one",
    ),
    (
        {"redis": {"url": "redis://r:6379/0"}},
        "gateway.redis shares tenants' limits and budgets across the gateway replicas: "
        "it needs gateway.tenants.secretName",
    ),
    (
        {"redis": {"urlSecret": {"name": "redis-auth"}}},
        "it needs gateway.tenants.secretName",
    ),
]


@pytest.mark.parametrize(("settings", "message"), REFUSED, ids=[m[:40] for _, m in REFUSED])
def test_contradicting_values_fail_the_install_with_a_message(
    settings: dict[str, Any], message: str
) -> None:
    result = template(gateway_values(**settings))
    assert result.returncode != 0, f"helm accepted {settings}"
    assert message in result.stderr, result.stderr
