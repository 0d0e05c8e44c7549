"""The chart's RBAC: the operator's and the gateway's rules files, scoped the way the values say.

The operator's rules file is the one its integration tests check every API
call against (tests/support/rbac_check.py); the gateway's is checked here against
every call its Kubernetes discovery and its demand writer make, run with the
official client against KMock's Kubernetes emulator (no API server can run
here; the emulator serves list, watch, create and patch over real HTTP). And
what the gateway must not be able to do, whoever controls it: change an
LLMDeployment (its spec says which image runs), list or watch Secrets (it
reads each model's key Secret by name, with `get`, and only the named ones
when `gateway.modelKeySecretNames` lists them).
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from modelplane.api import contract
from modelplane.api.demand import LEASE_API_VERSION, LEASE_PLURAL
from modelplane.gateway.discovery.demand_leases import DemandLeases
from modelplane.gateway.discovery.kubernetes import KubernetesDiscovery
from modelplane.gateway.routing.routes import DemandTarget, ModelRoute, RoutingTable
from tests.chart.helm import NAMESPACE, find, find_all, render
from tests.support.kube_emulator import CLUSTER_RESOURCES, EmulatorThread, resource_info
from tests.support.rbac_check import GATEWAY_RULES_FILE, ApiCall, allowed, api_call, load_rules

OPERATOR_RULES = load_rules()
GATEWAY_RULES = load_rules(GATEWAY_RULES_FILE)
WATCHED = ["ml-team-a", "ml-team-b"]
CLUSTER_SCOPED = {"customresourcedefinitions", "namespaces", "nodes", "clusterkopfpeerings"}


def canonical(rules: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(rule, sort_keys=True) for rule in rules)


def is_cluster_scoped(rule: dict[str, Any]) -> bool:
    return all(r.split("/")[0] in CLUSTER_SCOPED for r in rule["resources"])


def role_docs(docs: list[dict[str, Any]], component: str) -> list[dict[str, Any]]:
    rbac = "rbac.authorization.k8s.io/v1"
    return [
        d for d in docs if d["apiVersion"] == rbac and d["metadata"]["name"].endswith(component)
    ]


def test_cluster_wide_operator_gets_exactly_its_rules_file() -> None:
    docs = render()
    role = find(docs, "ClusterRole", "-operator")
    assert canonical(role["rules"]) == canonical(OPERATOR_RULES)
    binding = find(docs, "ClusterRoleBinding", "-operator")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": role["metadata"]["name"],
    }
    service_account = find(docs, "ServiceAccount", "-operator")["metadata"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": service_account["name"], "namespace": NAMESPACE}
    ]
    assert not find_all(docs, "Role") and not find_all(docs, "RoleBinding")


def test_namespaced_operator_gets_a_role_in_each_watched_namespace_and_nothing_cluster_wide() -> (
    None
):
    """Watching chosen namespaces, the operator turns kopf's CRD scanning off (handlers.py),
    so it needs no cluster-scoped permission at all."""
    docs = render({"operator": {"watchNamespaces": WATCHED}})
    roles = find_all(docs, "Role", "-operator")
    bindings = find_all(docs, "RoleBinding", "-operator")
    assert sorted(r["metadata"]["namespace"] for r in roles) == WATCHED
    assert sorted(b["metadata"]["namespace"] for b in bindings) == WATCHED
    namespaced = [rule for rule in OPERATOR_RULES if not is_cluster_scoped(rule)]
    for role in roles:
        assert canonical(role["rules"]) == canonical(namespaced)
    for binding in bindings:
        assert binding["roleRef"]["kind"] == "Role"
        (subject,) = binding["subjects"]
        assert subject["namespace"] == NAMESPACE  # the operator runs in the release namespace
    dropped = [rule for rule in OPERATOR_RULES if is_cluster_scoped(rule)]
    assert [r["resources"] for r in dropped] == [["customresourcedefinitions"]]
    assert not find_all(docs, "ClusterRole", "-operator")
    assert not [d for d in role_docs(docs, "-operator-cluster")]


def peering_calls(namespace: str | None) -> list[ApiCall]:
    """What kopf does with its peering object (kopf/_core/engines/peering.py): list and watch
    the peering resource, and patch its keep-alive into the object's status."""
    if namespace is None:
        base = "/apis/kopf.dev/v1/clusterkopfpeerings"
        name = f"{base}/modelplane"
    else:
        base = "/apis/kopf.dev/v1/kopfpeerings"
        name = f"/apis/kopf.dev/v1/namespaces/{namespace}/kopfpeerings/modelplane"
    calls = [
        api_call("GET", base, {}),
        api_call("GET", base, {"watch": "true"}),
        api_call("PATCH", name, {}),
    ]
    return [c for c in calls if c is not None]


def test_peered_operators_may_use_their_peering_object_and_nothing_more() -> None:
    single = render({"operator": {"replicas": 1}})
    assert not [c for c in peering_calls(None) if allowed(c, find(single, "ClusterRole")["rules"])]

    cluster_wide = render({"operator": {"replicas": 2}})
    rules = find(cluster_wide, "ClusterRole", "-operator")["rules"]
    assert all(allowed(c, rules) for c in peering_calls(None))
    assert canonical([r for r in rules if "kopf.dev" not in r["apiGroups"]]) == canonical(
        OPERATOR_RULES
    )

    namespaced = render({"operator": {"replicas": 2, "watchNamespaces": WATCHED}})
    for role in find_all(namespaced, "Role", "-operator"):
        calls = peering_calls(role["metadata"]["namespace"])
        assert all(allowed(c, role["rules"]) for c in calls)
        assert not any(allowed(c, role["rules"]) for c in peering_calls(None))


def test_gateway_gets_its_rules_file_cluster_wide_or_per_namespace() -> None:
    docs = render({"gateway": {"enabled": True}})
    role = find(docs, "ClusterRole", "-gateway")
    assert canonical(role["rules"]) == canonical(GATEWAY_RULES)
    binding = find(docs, "ClusterRoleBinding", "-gateway")
    account = find(docs, "ServiceAccount", "-gateway")["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    ]
    pod = find(docs, "Deployment", "-gateway")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account

    namespaced = render({"gateway": {"enabled": True}, "operator": {"watchNamespaces": WATCHED}})
    assert not find_all(namespaced, "ClusterRole", "-gateway")
    roles = find_all(namespaced, "Role", "-gateway")
    assert sorted(r["metadata"]["namespace"] for r in roles) == WATCHED
    assert all(canonical(r["rules"]) == canonical(GATEWAY_RULES) for r in roles)
    assert len(find_all(namespaced, "RoleBinding", "-gateway")) == len(WATCHED)


LLMD_PATH = f"/apis/{contract.API_VERSION}/namespaces/team/{contract.PLURAL}"
# Every way to change an LLMDeployment's spec (or to replace it), and to read a key.
FORBIDDEN_TO_THE_GATEWAY = [
    ("PATCH", f"{LLMD_PATH}/chat"),
    ("PUT", f"{LLMD_PATH}/chat"),
    ("POST", LLMD_PATH),
    ("DELETE", f"{LLMD_PATH}/chat"),
    ("DELETE", LLMD_PATH),
    ("PATCH", f"{LLMD_PATH}/chat/scale"),
    ("PUT", f"{LLMD_PATH}/chat/status"),
    ("GET", "/api/v1/namespaces/team/secrets"),  # a list: every Secret's data
    ("GET", "/api/v1/secrets"),
    ("POST", "/api/v1/namespaces/team/pods"),
    ("POST", "/apis/apps/v1/namespaces/team/deployments"),
]


def test_gateway_rules_write_nothing_but_demand_leases() -> None:
    for rule in GATEWAY_RULES:
        writes = set(rule["verbs"]) - {"get", "list", "watch"}
        assert not writes or (rule["resources"] == [LEASE_PLURAL] and writes <= {"create", "patch"})


@pytest.mark.parametrize("watch", [[], WATCHED], ids=["all-namespaces", "namespaced"])
@pytest.mark.parametrize(("method", "path"), FORBIDDEN_TO_THE_GATEWAY)
def test_the_gateways_service_account_cannot_change_an_llmdeployment(
    watch: list[str], method: str, path: str
) -> None:
    """Checked against the chart's rendered ClusterRole / Roles, bound to the gateway's
    service account: whoever takes over the gateway cannot make the operator run an image
    of their choosing (engine.image is in the spec), nor read a model's keys."""
    path = path.replace("/team/", f"/{(watch or ['team'])[0]}/")
    docs = render({"gateway": {"enabled": True}, "operator": {"watchNamespaces": watch}})
    account = find(docs, "ServiceAccount", "-gateway")["metadata"]["name"]
    bound = [
        d
        for d in docs
        if d["kind"] in ("ClusterRoleBinding", "RoleBinding")
        and {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE} in d["subjects"]
    ]
    assert bound
    roles = [
        find_all(docs, b["roleRef"]["kind"], b["roleRef"]["name"])[0]["rules"]
        if b["kind"] == "ClusterRoleBinding"
        else next(
            r["rules"]
            for r in find_all(docs, "Role", b["roleRef"]["name"])
            if r["metadata"]["namespace"] == b["metadata"]["namespace"]
        )
        for b in bound
    ]
    call = api_call(method, path, {})
    assert call is not None
    assert not any(allowed(call, rules) for rules in roles), call


# ---- the gateway's real calls, against the emulator ---------------------------------------


@pytest.fixture
def emulator() -> Iterator[EmulatorThread]:
    resources = {
        **CLUSTER_RESOURCES,
        "discovery.k8s.io/v1/endpointslices": resource_info("EndpointSlice"),
        "v1/secrets": resource_info("Secret"),
    }
    with EmulatorThread(resources) as emulator:
        yield emulator


@pytest.fixture
def api_client(emulator: EmulatorThread) -> Iterator[Callable[[], client.ApiClient]]:
    configuration = client.Configuration()
    configuration.host = emulator.url
    clients: list[client.ApiClient] = []

    def factory() -> client.ApiClient:
        clients.append(client.ApiClient(configuration))
        return clients[-1]

    yield factory
    for c in clients:
        c.close()  # type: ignore[no-untyped-call]


def llmdeployment(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": contract.API_VERSION,
        "kind": contract.KIND,
        "metadata": {"name": "chat", "namespace": namespace},
        "spec": {
            "model": {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"},
            "auth": {"apiKeySecretRef": {"name": "chat-keys"}},
        },
    }


def key_secret(namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "chat-keys", "namespace": namespace},
        "data": {"keys": base64.b64encode(b"sk-model\n").decode()},
    }


def test_gateway_reads_secrets_only_by_name_and_only_the_named_ones_when_listed() -> None:
    for watch in ([], WATCHED):
        values: dict[str, Any] = {
            "gateway": {"enabled": True},
            "operator": {"watchNamespaces": watch},
        }
        docs = render(values)
        roles = find_all(docs, "Role" if watch else "ClusterRole", "-gateway")
        for role in roles:
            (rule,) = [r for r in role["rules"] if "secrets" in r["resources"]]
            assert rule == {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
        values["gateway"]["modelKeySecretNames"] = ["chat-keys"]
        for role in find_all(render(values), "Role" if watch else "ClusterRole", "-gateway"):
            namespace = role["metadata"].get("namespace", "team")
            base = f"/api/v1/namespaces/{namespace}/secrets"
            named, other = (
                api_call("GET", f"{base}/chat-keys", {}),
                api_call("GET", f"{base}/db-password", {}),
            )
            assert named is not None and other is not None
            assert allowed(named, role["rules"]) and not allowed(other, role["rules"])


@pytest.mark.parametrize("watch", [[], WATCHED], ids=["all-namespaces", "namespaced"])
async def test_every_call_of_the_gateway_is_allowed_by_the_chart(
    watch: list[str], emulator: EmulatorThread, api_client: Callable[[], Any]
) -> None:
    custom = client.CustomObjectsApi(api_client())
    core = client.CoreV1Api(api_client())
    for namespace in watch or [WATCHED[0]]:
        await asyncio.to_thread(
            custom.create_namespaced_custom_object,
            contract.GROUP,
            contract.VERSION,
            namespace,
            contract.PLURAL,
            llmdeployment(namespace),
        )
        await asyncio.to_thread(
            core.create_namespaced_secret,
            namespace,
            client.V1Secret.model_validate(key_secret(namespace)),
        )
    setup = len(emulator.requests())
    table = RoutingTable()
    discovery = KubernetesDiscovery(table, api_client, namespaces=watch, retry_delay_s=0.1)
    task = asyncio.create_task(discovery.run())
    try:
        async with asyncio.timeout(10):
            while not table.synced:
                await table.wait_changed()
        targets = tuple(DemandTarget(ns, "chat") for ns in watch or [WATCHED[0]])
        demand = DemandLeases(api_client, hold_seconds=60)
        held = ModelRoute("chat", tracks=(), demand=targets)
        await demand.record(held, 1)  # creates each Lease
        await demand.record(held, 2)  # renews it
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    requests = emulator.requests()[setup:]
    calls = [api_call(r.method.value, r.url.path, dict(r.params)) for r in requests]
    made = [c for c in calls if c is not None]
    assert {c.verb for c in made} >= {"list", "watch", "create", "patch", "get"}
    secret_reads = [c for c in made if c.resource == "secrets"]
    assert secret_reads and {c.verb for c in secret_reads} == {"get"}  # by name, never a list
    writes = [c for c in made if c.verb in ("create", "patch")]
    assert len(writes) == 2 * len(targets)  # each LLMDeployment's Lease, created and renewed
    assert {c.resource for c in writes} == {LEASE_PLURAL}
    assert all(c.path.startswith(f"/apis/{LEASE_API_VERSION}/") for c in writes)

    gateway = {"enabled": True, "modelKeySecretNames": ["chat-keys"]}
    docs = render({"gateway": gateway, "operator": {"watchNamespaces": watch}})
    if not watch:
        rules = find(docs, "ClusterRole", "-gateway")["rules"]
        refused = [c for c in made if not allowed(c, rules)]
    else:
        by_namespace = {
            r["metadata"]["namespace"]: r["rules"] for r in find_all(docs, "Role", "-gateway")
        }
        refused = [c for c in made if not allowed(c, by_namespace.get(namespace_of(c), []))]
    assert not refused, refused


def namespace_of(call: ApiCall) -> str | None:
    parts = call.path.strip("/").split("/")
    return parts[parts.index("namespaces") + 1] if "namespaces" in parts else None


def test_operator_reads_model_keys_only_by_name_and_only_the_named_ones_when_listed() -> None:
    """To load adapters into a model with a key; never a list (every Secret's data)."""
    for watch in ([], WATCHED):
        values: dict[str, Any] = {"operator": {"watchNamespaces": watch}}
        kind = "Role" if watch else "ClusterRole"
        for role in find_all(render(values), kind, "-operator"):
            namespace = role["metadata"].get("namespace", "team")
            listing = api_call("GET", f"/api/v1/namespaces/{namespace}/secrets", {})
            one = api_call("GET", f"/api/v1/namespaces/{namespace}/secrets/db-password", {})
            assert listing is not None and one is not None
            assert allowed(one, role["rules"]) and not allowed(listing, role["rules"])
        values["gateway"] = {"modelKeySecretNames": ["chat-keys"]}
        for role in find_all(render(values), kind, "-operator"):
            namespace = role["metadata"].get("namespace", "team")
            base = f"/api/v1/namespaces/{namespace}/secrets"
            named, other = (
                api_call("GET", f"{base}/chat-keys", {}),
                api_call("GET", f"{base}/db-password", {}),
            )
            assert named is not None and other is not None
            assert allowed(named, role["rules"]) and not allowed(other, role["rules"])
