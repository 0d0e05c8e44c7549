"""The operator's RBAC rules and the checker the integration tests run every API call through."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest

from tests.support.rbac_check import api_call, disallowed_calls, load_rules

RULES = load_rules()


@pytest.mark.parametrize(
    ("method", "path", "query", "verb", "resource"),
    [
        ("GET", "/apis/apps/v1/deployments", {"watch": "true"}, "watch", "deployments"),
        ("GET", "/api/v1/configmaps", {}, "list", "configmaps"),
        ("GET", "/api/v1/namespaces/a/pods/p", {}, "get", "pods"),
        ("PATCH", "/apis/modelplane.io/v1alpha1/namespaces/a/llmdeployments/x/status", {},
         "patch", "llmdeployments/status"),
        ("PATCH", "/apis/apps/v1/namespaces/a/deployments/x/scale", {}, "patch",
         "deployments/scale"),
        ("POST", "/api/v1/namespaces/a/events", {}, "create", "events"),
        ("DELETE", "/api/v1/namespaces/a/services/x", {}, "delete", "services"),
    ],
)  # fmt: skip
def test_requests_map_to_rbac_verbs(
    method: str, path: str, query: dict[str, str], verb: str, resource: str
) -> None:
    call = api_call(method, path, query)
    assert call is not None and (call.verb, call.resource) == (verb, resource)


@pytest.mark.parametrize("path", ["/api", "/apis", "/api/v1", "/apis/apps/v1", "/version"])
def test_discovery_needs_no_rule(path: str) -> None:
    assert api_call("GET", path, {}) is None


def test_what_the_operator_and_autoscaler_need_is_allowed() -> None:
    needed = [
        ("GET", "/apis/modelplane.io/v1alpha1/llmdeployments", {"watch": "true"}),
        ("PATCH", "/apis/modelplane.io/v1alpha1/namespaces/a/llmdeployments/x/status", {}),
        ("PATCH", "/apis/apps/v1/namespaces/a/deployments/x", {}),
        ("PATCH", "/apis/apps/v1/namespaces/a/deployments/x/scale", {}),
        ("PATCH", "/apis/modelplane.io/v1alpha1/namespaces/a/llmdeployments/x", {}),
        ("GET", "/api/v1/namespaces/a/pods", {}),
        ("PATCH", "/apis/monitoring.coreos.com/v1/namespaces/a/servicemonitors/x", {}),
        ("POST", "/api/v1/namespaces/a/events", {}),
    ]
    assert disallowed_calls(needed, RULES) == []


def test_least_privilege_refuses_what_it_should() -> None:
    refused: list[tuple[str, str, dict[str, str]]] = [
        # A model's key Secret by name, yes (to load adapters); every Secret's data, no.
        ("GET", "/api/v1/namespaces/a/secrets", {}),
        ("POST", "/api/v1/namespaces/a/secrets", {}),
        ("POST", "/api/v1/namespaces/a/pods/x/exec", {}),
        ("DELETE", "/apis/modelplane.io/v1alpha1/namespaces/a/llmdeployments/x", {}),
        ("PUT", "/apis/modelplane.io/v1alpha1/namespaces/a/llmdeployments/x", {}),
        ("DELETE", "/api/v1/namespaces/a/pods/x", {}),
        ("PATCH", "/apis/rbac.authorization.k8s.io/v1/clusterroles/x", {}),
    ]
    assert len(disallowed_calls(refused, RULES)) == len(refused)


@pytest.mark.parametrize("version", ["1.30", kubernetes_validate.latest_version()])
def test_rules_make_a_valid_cluster_role_and_role(version: str) -> None:
    """The chart templates both from the rules file; they must be valid RBAC objects."""
    meta = {"name": "modelplane-operator"}
    cluster_role: dict[str, Any] = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": meta,
        "rules": RULES,
    }
    role = {**cluster_role, "kind": "Role", "metadata": {**meta, "namespace": "llm"}}
    for manifest in (cluster_role, role):
        kubernetes_validate.validate(manifest, version, strict=True)
    assert all(rule["verbs"] != ["*"] and "*" not in rule["resources"] for rule in RULES)
