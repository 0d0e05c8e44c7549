"""What the operator asks the API server for: its own children and model pods, in pages.

The selectors are read back with the emulator's parser of `?labelSelector=`
(tests/support/label_selectors.py), which follows the API server's grammar,
against the labels the builders really put on children and pods.
"""

from __future__ import annotations

import kopf
import pytest

from modelplane.api import contract
from modelplane.api.llmdeployment import LLMDeploymentSpec
from modelplane.operator.builders import BuildOptions, CanaryTrack, build_children
from modelplane.operator.config import OperatorConfig
from modelplane.operator.handlers import CHILD_INDEXES
from modelplane.operator.kube.resources import LLMDEPLOYMENTS, PODS, ResourceType
from modelplane.operator.kube.watch_scope import (
    LIST_PAGE_SIZE,
    MANAGED_LABELS,
    MODEL_POD_LABELS,
    label_selector,
    scope_watches,
    watch_selectors,
)
from tests.support.label_selectors import parse_selector

SPEC = LLMDeploymentSpec.model_validate(
    {"model": {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"}}
)
CHILDREN = parse_selector(label_selector(MANAGED_LABELS))
MODEL_PODS = parse_selector(label_selector(MODEL_POD_LABELS))


def built(options: BuildOptions) -> list[dict[str, object]]:
    return build_children("chat", "llm", SPEC, OperatorConfig(), options)


def labels(manifest: dict[str, object]) -> dict[str, str]:
    meta = manifest["metadata"]
    assert isinstance(meta, dict)
    found: dict[str, str] = meta.get("labels", {})
    return found


@pytest.mark.parametrize(
    "options",
    [
        BuildOptions(replicas=1, service_monitor_api=True),
        BuildOptions(replicas=1, canary=CanaryTrack(replicas=1, weight=10), stable_revision="v1"),
    ],
    ids=["stable", "canary"],
)
def test_every_child_and_its_pods_are_selected(options: BuildOptions) -> None:
    manifests = built(options)
    assert manifests
    for manifest in manifests:
        assert CHILDREN.matches(labels(manifest)), manifest["kind"]
    templates = [m["spec"]["template"] for m in manifests if m["kind"] == "Deployment"]  # type: ignore[index]
    assert templates
    for template in templates:
        assert MODEL_PODS.matches(template["metadata"]["labels"])


@pytest.mark.parametrize(
    "other",
    [
        {"app": "web"},
        {contract.LABEL_MANAGED_BY: "Helm", contract.LABEL_LLMDEPLOYMENT: "chat"},
        {contract.LABEL_MANAGED_BY: contract.MANAGED_BY},  # no LLMDeployment to belong to
    ],
)
def test_other_objects_are_not_selected(other: dict[str, str]) -> None:
    assert not CHILDREN.matches(other)
    assert not MODEL_PODS.matches(other)


def test_only_model_server_pods() -> None:
    managed = {contract.LABEL_MANAGED_BY: contract.MANAGED_BY, contract.LABEL_LLMDEPLOYMENT: "c"}
    assert not MODEL_PODS.matches({**managed, contract.LABEL_COMPONENT: "download"})


def kopf_resource(rtype: ResourceType) -> kopf.Resource:
    return kopf.Resource(rtype.group, rtype.version, rtype.plural, kind=rtype.kind)


def test_kopf_sends_the_selectors_and_pages_its_lists() -> None:
    settings = kopf.OperatorSettings()
    scope_watches(settings, watch_selectors(CHILD_INDEXES.values()))
    for rtype in CHILD_INDEXES.values():
        assert settings.watching.label_selectors.collect(kopf_resource(rtype)) == [
            label_selector(MANAGED_LABELS)
        ], rtype.plural
    assert settings.watching.label_selectors.collect(kopf_resource(PODS)) == [
        label_selector(MODEL_POD_LABELS)
    ]
    # The LLMDeployments, and pods of other API groups, are not narrowed.
    assert settings.watching.label_selectors.collect(kopf_resource(LLMDEPLOYMENTS)) == []
    metrics_pods = kopf.Resource("metrics.k8s.io", "v1beta1", "pods", kind="PodMetrics")
    assert settings.watching.label_selectors.collect(metrics_pods) == []
    assert settings.watching.chunk_size == LIST_PAGE_SIZE


def test_selector_text() -> None:
    assert label_selector({"b": "2", "a": None}) == "a,b=2"
