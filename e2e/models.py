"""The LLMDeployments the e2e tests apply, and what the tests read back from the cluster.

Every test model is one of manifests/samples/ (what users apply), renamed
and changed only where a test needs it (`variant`), so the suite exercises
the samples themselves. `deployed` applies one, waits for it to be Ready and,
afterwards, deletes it and waits until its pods are gone, so the next test
module starts on an empty node (the capacity check counts on that).
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import yaml

from e2e.environment import REPO
from e2e.kube import Kubectl, wait_until
from modelplane.api import contract

SAMPLES: Final = REPO / "manifests" / "samples"
LOAD_TIMEOUT: Final = 30 * 60  # a first start pulls the model from the Hub
GONE_TIMEOUT: Final = 10 * 60  # pods drain before they go
CHILD_KINDS: Final = "deployments,services,configmaps,poddisruptionbudgets,networkpolicies"


def sample(file_name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((SAMPLES / file_name).read_text())
    return loaded


def merged(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `changes` merged in, maps key by key (a None value removes the key)."""
    out = copy.deepcopy(dict(base))
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def variant(file_name: str, name: str, spec_changes: Mapping[str, Any]) -> dict[str, Any]:
    """A sample under another name (served under that name too), with spec changes."""
    base = sample(file_name)
    changes = {
        "metadata": {"name": name},
        "spec": merged({"model": {"servedName": name}}, spec_changes),
    }
    return merged(base, changes)


@dataclass(frozen=True)
class Model:
    """One applied LLMDeployment: what the tests address it by."""

    name: str
    namespace: str
    manifest: Mapping[str, Any]

    @property
    def served_name(self) -> str:
        served: str = self.manifest["spec"]["model"].get("servedName", self.name)
        return served

    @property
    def service_url(self) -> str:
        """Its OpenAI base URL inside the cluster (status.endpoint says the same)."""
        return f"http://{self.name}.{self.namespace}.svc:{contract.SERVER_PORT}/v1"

    @property
    def selector(self) -> str:
        return f"{contract.LABEL_LLMDEPLOYMENT}={self.name}"


def resource(kubectl: Kubectl, model: Model) -> dict[str, Any]:
    found: dict[str, Any] = kubectl.json("get", "llmdeployment", model.name, "-n", model.namespace)
    return found


def status(kubectl: Kubectl, model: Model) -> dict[str, Any]:
    found: dict[str, Any] = resource(kubectl, model).get("status", {})
    return found


def ready(kubectl: Kubectl, model: Model, replicas: int) -> bool:
    """Phase Ready with `replicas` ready, as computed for the latest spec."""
    body = resource(kubectl, model)
    current = body.get("status", {})
    return (
        current.get("phase") == "Ready"
        and (current.get("readyReplicas") or 0) == replicas
        and current.get("observedGeneration") == body["metadata"].get("generation")
    )


def condition(current_status: Mapping[str, Any], kind: str) -> dict[str, Any]:
    for found in current_status.get("conditions", []):
        if found.get("type") == kind:
            return dict(found)
    return {}


def pods(kubectl: Kubectl, model: Model, track: str | None = None) -> list[dict[str, Any]]:
    """The model's pods that are not being deleted."""
    selector = model.selector + (f",{contract.LABEL_TRACK}={track}" if track else "")
    found = kubectl.items("pods", "-n", model.namespace, "-l", selector)
    return [p for p in found if not p["metadata"].get("deletionTimestamp")]


def all_pods_gone(kubectl: Kubectl, model: Model) -> bool:
    return kubectl.items("pods", "-n", model.namespace, "-l", model.selector) == []


def children(kubectl: Kubectl, model: Model) -> list[str]:
    out = kubectl("get", CHILD_KINDS, "-n", model.namespace, "-l", model.selector, "-o", "name")
    return out.split()


def patch(kubectl: Kubectl, model: Model, changes: Mapping[str, Any]) -> None:
    kubectl(
        "patch",
        "llmdeployment",
        model.name,
        "-n",
        model.namespace,
        "--type=merge",
        "-p",
        json.dumps(changes),
    )


def template_hash(kubectl: Kubectl, model: Model, deployment: str | None = None) -> str | None:
    """The pod-template hash the operator put on a Deployment (the stable one by default)."""
    body = kubectl.json("get", "deployment", deployment or model.name, "-n", model.namespace)
    annotations = body["spec"]["template"]["metadata"].get("annotations", {})
    value = annotations.get(contract.ANNOTATION_TEMPLATE_HASH)
    return str(value) if value is not None else None


def pod_template_hashes(kubectl: Kubectl, model: Model) -> set[str | None]:
    return {
        p["metadata"].get("annotations", {}).get(contract.ANNOTATION_TEMPLATE_HASH)
        for p in pods(kubectl, model)
    }


def exists(kubectl: Kubectl, kind: str, name: str, namespace: str) -> bool:
    out = kubectl("get", kind, name, "-n", namespace, "--ignore-not-found", "-o", "name")
    return bool(out.strip())


def events(kubectl: Kubectl, model: Model, reason: str) -> list[dict[str, Any]]:
    """Events the operator posted on the model with this reason."""
    selector = f"involvedObject.name={model.name},reason={reason}"
    return kubectl.items("events", "-n", model.namespace, "--field-selector", selector)


def delete(kubectl: Kubectl, model: Model) -> None:
    """Delete it (its children go by owner reference) and wait until its pods are gone."""
    kubectl(
        "delete",
        "llmdeployment",
        model.name,
        "-n",
        model.namespace,
        "--ignore-not-found",
        "--wait=true",
        timeout=300,
    )
    wait_until(
        f"the pods of {model.name} gone",
        lambda: all_pods_gone(kubectl, model),
        timeout=GONE_TIMEOUT,
        every=5,
    )


@contextlib.contextmanager
def deployed(
    kubectl: Kubectl, namespace: str, manifest: Mapping[str, Any], replicas: int = 1
) -> Iterator[Model]:
    """The manifest applied in `namespace` and Ready with `replicas`; deleted afterwards."""
    model = Model(manifest["metadata"]["name"], namespace, manifest)
    kubectl.apply(yaml.safe_dump(dict(manifest)), namespace)
    try:
        wait_until(
            f"{model.name} Ready with {replicas} replica(s)",
            lambda: ready(kubectl, model, replicas),
            timeout=LOAD_TIMEOUT,
            every=5,
        )
        yield model
    finally:
        delete(kubectl, model)
