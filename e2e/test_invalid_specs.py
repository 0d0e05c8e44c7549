"""Invalid LLMDeployments are refused by the real API server, with the CRD's own message.

Each case changes the CPU sample in one way a CEL rule of the CRD
(`x-kubernetes-validations` in crds/) forbids, and is created with
`kubectl create --dry-run=server`: the API server runs the whole validation
and stores nothing. The refusal must carry that rule's message, word for
word, as the user sees it. The sample unchanged is accepted, so each refusal
is the change's doing. (tests/unit/test_e2e_fixtures.py checks offline that
each case breaks exactly the rule named here.)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import pytest
import yaml

from e2e import models
from e2e.environment import REPO
from e2e.kube import CommandError, Kubectl

CRD: Final = REPO / "crds" / "llmdeployments.modelplane.io.yaml"
SAMPLE: Final = "smollm2-cpu.yaml"
NAME: Final = "refused"

# (case, name, spec changes, a fragment naming the one CEL rule it breaks)
CASES: Final[list[tuple[str, str, dict[str, Any], str]]] = [
    (
        "source without a known scheme",
        NAME,
        {"model": {"source": "http://example.com/m"}},
        "model.source must start with",
    ),
    (
        "minReplicas above maxReplicas",
        NAME,
        {"autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 2}},
        "must not exceed autoscaling.maxReplicas",
    ),
    (
        "canary steps short of 100",
        NAME,
        {"rollout": {"strategy": "Canary", "canary": {"steps": [10, 50]}}},
        "must end at 100",
    ),
    (
        "canary steps out of order",
        NAME,
        {"rollout": {"strategy": "Canary", "canary": {"steps": [50, 10, 100]}}},
        "strictly ascending",
    ),
    (
        "no room to roll out",
        NAME,
        {"rollout": {"maxSurge": 0, "maxUnavailable": 0}},
        "cannot both be 0",
    ),
    (
        "gpus not a multiple of tensorParallelSize",
        NAME,
        {"resources": {"gpus": 3}, "engine": {"tensorParallelSize": 2}},
        "multiple of engine.tensorParallelSize",
    ),
    ("a name too long for its Service", "a" * 51, {}, "must be a DNS label"),
    (
        "an adapter named like the model",
        NAME,
        {"adapters": [{"name": NAME, "source": "hf://example/lora"}]},
        "must differ from the base model's served name",
    ),
    (
        "an adapter source without a known scheme",
        NAME,
        {"adapters": [{"name": "sql", "source": "http://example.com/lora"}]},
        "adapters[].source must start with",
    ),
]


def _rules(node: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(node, Mapping):
        yield from node.get("x-kubernetes-validations", [])
        for value in node.values():
            yield from _rules(value)
    elif isinstance(node, list):
        for value in node:
            yield from _rules(value)


def cel_messages(crd: Path = CRD) -> list[str]:
    """Every CEL rule's message in the CRD."""
    return [str(rule["message"]) for rule in _rules(yaml.safe_load(crd.read_text()))]


def cel_message(fragment: str, crd: Path = CRD) -> str:
    """The one CEL message in the CRD that contains `fragment`."""
    found = [m for m in cel_messages(crd) if fragment in m]
    if len(found) != 1:
        raise LookupError(f"{len(found)} CEL messages of {crd.name} contain {fragment!r}: {found}")
    return found[0]


def manifest(name: str, changes: Mapping[str, Any]) -> dict[str, Any]:
    return models.variant(SAMPLE, name, changes)


def create_dry_run(kubectl: Kubectl, namespace: str, body: Mapping[str, Any]) -> str:
    return kubectl(
        "create",
        "--dry-run=server",
        "-n",
        namespace,
        "-o",
        "name",
        "-f",
        "-",
        stdin=yaml.safe_dump(dict(body)),
    )


def test_the_sample_unchanged_is_accepted(models_namespace: str, kubectl: Kubectl) -> None:
    created = create_dry_run(kubectl, models_namespace, manifest(NAME, {}))
    assert created.strip() == f"llmdeployment.modelplane.io/{NAME}"


@pytest.mark.parametrize(
    ("name", "changes", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_the_api_server_refuses_it_with_the_rule_s_message(
    models_namespace: str, kubectl: Kubectl, name: str, changes: dict[str, Any], fragment: str
) -> None:
    expected = cel_message(fragment)
    with pytest.raises(CommandError) as refused:
        create_dry_run(kubectl, models_namespace, manifest(name, changes))
    assert "is invalid" in str(refused.value)
    assert expected in str(refused.value)
