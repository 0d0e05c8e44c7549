"""The chart's ValidatingAdmissionPolicies: rendered where the cluster has the API, and what
their CEL lets the operator's and the gateway's service accounts write.

helm renders the chart with and without the API version
`admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy` (`--api-versions`,
what `helm install` learns from a 1.30+ cluster's discovery). No API server
runs here, so each policy's expressions are evaluated with `celpy` against
sample admission requests (tests/support/admission_policy.py), and the
objects are checked against the Kubernetes 1.30 schema.
"""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pytest
import yaml

from modelplane.api import contract
from modelplane.api.demand import demand_lease
from tests.chart.helm import NAMESPACE, find, find_all, template
from tests.support.admission_policy import Request, Verdict, decide

VAP_API = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy"
MANAGED = {contract.LABEL_MANAGED_BY: contract.MANAGED_BY}


def render(values: dict[str, Any] | None = None, *, vap_api: bool = True) -> list[dict[str, Any]]:
    extra = ("--api-versions", VAP_API) if vap_api else ()
    result = template(values, None, *extra)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return render({"gateway": {"enabled": True}})


def account(docs: list[dict[str, Any]], component: str) -> str:
    name = find(docs, "ServiceAccount", f"-{component}")["metadata"]["name"]
    return f"system:serviceaccount:{NAMESPACE}:{name}"


def policy(docs: list[dict[str, Any]], component: str) -> dict[str, Any]:
    return find(docs, "ValidatingAdmissionPolicy", f"-{component}-writes")


def obj(kind: str, name: str = "chat", labels: dict[str, str] | None = None,
        **fields: Any) -> dict[str, Any]:  # fmt: skip
    meta: dict[str, Any] = {"name": name, "namespace": "team"}
    if labels is not None:
        meta["labels"] = labels
    return {"kind": kind, "metadata": meta, **fields}


def test_the_policies_come_only_with_the_api_and_can_be_switched_off() -> None:
    kinds = {"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
    assert not [d for d in render(vap_api=False) if d["kind"] in kinds]  # before 1.30
    assert not [d for d in render({"admissionPolicy": {"enabled": False}}) if d["kind"] in kinds]
    only_operator = render()  # the gateway is off by default
    assert [d["metadata"]["name"] for d in only_operator if d["kind"] in kinds] == [
        "mp-modelplane-operator-writes",
        "mp-modelplane-operator-writes",
    ]


def test_each_policy_is_bound_to_deny_and_valid_for_kubernetes_1_30(
    docs: list[dict[str, Any]],
) -> None:
    for component in ("operator", "gateway"):
        found = policy(docs, component)
        binding = find(docs, "ValidatingAdmissionPolicyBinding", f"-{component}-writes")
        assert binding["spec"] == {
            "policyName": found["metadata"]["name"],
            "validationActions": ["Deny"],
        }
        assert found["spec"]["failurePolicy"] == "Fail"
        for doc in (found, binding):
            kubernetes_validate.validate(doc, "1.30", strict=True)


def operator_request(docs: list[dict[str, Any]], **fields: Any) -> Verdict:
    return decide(policy(docs, "operator"), Request(username=account(docs, "operator"), **fields))


@pytest.mark.parametrize(
    ("case", "fields", "allowed"),
    [
        ("creates a child it labels",
         {"group": "apps", "resource": "deployments", "operation": "CREATE",
          "object": obj("Deployment", labels=MANAGED)}, True),
        ("updates its own Service",
         {"group": "", "resource": "services", "operation": "UPDATE",
          "object": obj("Service", labels=MANAGED), "old_object": obj("Service", labels=MANAGED)},
         True),
        ("deletes its own ConfigMap",
         {"group": "", "resource": "configmaps", "operation": "DELETE",
          "old_object": obj("ConfigMap", labels=MANAGED)}, True),
        ("creates an unlabelled NetworkPolicy",
         {"group": "networking.k8s.io", "resource": "networkpolicies", "operation": "CREATE",
          "object": obj("NetworkPolicy")}, False),
        ("takes over an admin's NetworkPolicy by labelling it",
         {"group": "networking.k8s.io", "resource": "networkpolicies", "operation": "UPDATE",
          "object": obj("NetworkPolicy", labels=MANAGED),
          "old_object": obj("NetworkPolicy", labels={"team": "net"})}, False),
        ("deletes someone else's ConfigMap",
         {"group": "", "resource": "configmaps", "operation": "DELETE",
          "old_object": obj("ConfigMap", labels={"app": "other"})}, False),
        ("strips the label from its own Deployment",
         {"group": "apps", "resource": "deployments", "operation": "UPDATE",
          "object": obj("Deployment", labels={}), "old_object": obj("Deployment", labels=MANAGED)},
         False),
        ("labels itself another operator's object",
         {"group": "", "resource": "secrets", "operation": "CREATE",
          "object": obj("Secret", labels={contract.LABEL_MANAGED_BY: "helm"})}, False),
        ("writes its state annotation on an LLMDeployment",
         {"group": contract.GROUP, "resource": contract.PLURAL, "operation": "UPDATE",
          "object": obj(contract.KIND, spec={"replicas": 2},
                        labels=None) | {"metadata": {"annotations": {"x": "1"}}},
          "old_object": obj(contract.KIND, spec={"replicas": 2})}, True),
        ("changes an LLMDeployment's image",
         {"group": contract.GROUP, "resource": contract.PLURAL, "operation": "UPDATE",
          "object": obj(contract.KIND, spec={"engine": {"image": "evil:latest"}}),
          "old_object": obj(contract.KIND, spec={"engine": {"image": "vllm:1"}})}, False),
        ("creates an LLMDeployment",
         {"group": contract.GROUP, "resource": contract.PLURAL, "operation": "CREATE",
          "object": obj(contract.KIND, labels=MANAGED, spec={})}, False),
        ("writes an LLMDeployment's status (a subresource: not matched)",
         {"group": contract.GROUP, "resource": contract.PLURAL, "sub_resource": "status",
          "operation": "UPDATE", "object": obj(contract.KIND), "old_object": obj(contract.KIND)},
         True),
        ("scales a Deployment (a subresource: not matched)",
         {"group": "apps", "resource": "deployments", "sub_resource": "scale",
          "operation": "UPDATE", "object": obj("Scale"), "old_object": obj("Scale")}, True),
        ("posts an Event (its bookkeeping: excluded)",
         {"group": "", "resource": "events", "operation": "CREATE", "object": obj("Event")},
         True),
        ("renews kopf's peering (excluded)",
         {"group": "kopf.dev", "resource": "clusterkopfpeerings", "operation": "UPDATE",
          "object": obj("ClusterKopfPeering"), "old_object": obj("ClusterKopfPeering")}, True),
    ],
)  # fmt: skip
def test_the_operator_writes_only_what_it_manages(
    docs: list[dict[str, Any]], case: str, fields: dict[str, Any], allowed: bool
) -> None:
    verdict = operator_request(docs, **fields)
    assert verdict.allowed is allowed, (case, verdict.messages)


def test_a_refusal_says_which_object_and_why(docs: list[dict[str, Any]]) -> None:
    verdict = operator_request(
        docs, group="networking.k8s.io", resource="networkpolicies", operation="CREATE",
        name="deny-all", namespace="team", object=obj("NetworkPolicy", name="deny-all"),
    )  # fmt: skip
    assert verdict.applies and not verdict.allowed
    (message,) = verdict.messages
    assert message == (
        "the Modelplane operator writes only objects labelled "
        "app.kubernetes.io/managed-by=modelplane-operator; networkpolicies team/deny-all is "
        "not (CREATE)"
    )
    spec = operator_request(
        docs, group=contract.GROUP, resource=contract.PLURAL, operation="UPDATE", name="chat",
        object=obj(contract.KIND, spec={"replicas": 3}), old_object=obj(contract.KIND, spec={}),
    )  # fmt: skip
    assert spec.messages == (
        "the Modelplane operator may not UPDATE LLMDeployment team/chat's spec "
        "(replicas go through the scale subresource)",
    )


@pytest.mark.parametrize("username", ["system:serviceaccount:team:default", "jane@example.com"])
def test_anyone_else_is_not_concerned(docs: list[dict[str, Any]], username: str) -> None:
    request = Request(
        username=username, group="networking.k8s.io", resource="networkpolicies",
        operation="CREATE", object=obj("NetworkPolicy"),
    )  # fmt: skip
    for component in ("operator", "gateway"):
        verdict = decide(policy(docs, component), request)
        assert not verdict.applies and verdict.allowed


def test_the_real_operator_children_pass() -> None:
    """Every child the operator renders for a sample LLMDeployment (a canary running, a
    ServiceMonitor) passes the policy."""
    from modelplane.api.llmdeployment import LLMDeploymentSpec
    from modelplane.operator.builders import BuildOptions, build_children
    from modelplane.operator.config import OperatorConfig

    spec = LLMDeploymentSpec.model_validate(
        {"model": {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"}}
    )
    docs = render()
    options = BuildOptions(replicas=1, service_monitor_api=True)
    children = build_children("chat", "team", spec, OperatorConfig(), options)
    assert {c["kind"] for c in children} >= {"Deployment", "Service", "NetworkPolicy"}
    for child in children:
        group = child["apiVersion"].rpartition("/")[0]
        verdict = operator_request(
            docs, group=group, resource=child["kind"].lower() + "s", operation="CREATE",
            name=child["metadata"]["name"], object=child,
        )  # fmt: skip
        assert verdict.allowed, (child["kind"], verdict.messages)


def gateway_request(docs: list[dict[str, Any]], **fields: Any) -> Verdict:
    return decide(policy(docs, "gateway"), Request(username=account(docs, "gateway"), **fields))


LEASE = demand_lease("team", "chat", "uid-1", 3, "gateway-0", 120)


@pytest.mark.parametrize(
    ("case", "fields", "allowed"),
    [
        ("creates a demand Lease",
         {"group": "coordination.k8s.io", "resource": "leases", "operation": "CREATE",
          "object": LEASE}, True),
        ("renews it", {"group": "coordination.k8s.io", "resource": "leases",
                       "operation": "UPDATE", "object": LEASE, "old_object": LEASE}, True),
        ("takes a leader election's Lease",
         {"group": "coordination.k8s.io", "resource": "leases", "operation": "UPDATE",
          "namespace": "kube-system", "name": "kube-controller-manager",
          "object": obj("Lease", name="kube-controller-manager"),
          "old_object": obj("Lease", name="kube-controller-manager")}, False),
        ("labels another Lease as a demand Lease",
         {"group": "coordination.k8s.io", "resource": "leases", "operation": "UPDATE",
          "object": LEASE, "old_object": obj("Lease")}, False),
        ("deletes a demand Lease",
         {"group": "coordination.k8s.io", "resource": "leases", "operation": "DELETE",
          "old_object": LEASE}, False),
        ("patches an LLMDeployment",
         {"group": contract.GROUP, "resource": contract.PLURAL, "operation": "UPDATE",
          "object": obj(contract.KIND), "old_object": obj(contract.KIND)}, False),
        ("scales an LLMDeployment",
         {"group": contract.GROUP, "resource": contract.PLURAL, "sub_resource": "scale",
          "operation": "UPDATE", "object": obj("Scale"), "old_object": obj("Scale")}, False),
    ],
)  # fmt: skip
def test_the_gateway_writes_only_its_demand_leases(
    docs: list[dict[str, Any]], case: str, fields: dict[str, Any], allowed: bool
) -> None:
    verdict = gateway_request(docs, **fields)
    assert verdict.applies and verdict.allowed is allowed, (case, verdict.messages)


def test_namespaced_installs_get_the_same_policies() -> None:
    docs = render({"operator": {"watchNamespaces": ["ml-a", "ml-b"]}, "gateway": {"enabled": True}})
    assert len(find_all(docs, "ValidatingAdmissionPolicy")) == 2
    assert not find_all(docs, "ClusterRole")
