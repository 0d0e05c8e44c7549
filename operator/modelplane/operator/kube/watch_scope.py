"""What the operator lists and watches: only what it manages, chosen by the API server.

kopf's `labels=` filters on handlers are checked after an object has arrived,
so with those alone the operator would list and watch every Pod, ConfigMap,
Service, Deployment, PodDisruptionBudget and NetworkPolicy of the cluster (or
of each watched namespace) and hold each one while filtering it out. The
label selectors here are sent to the API server instead, on the list and on
the watch that follows it (kopf's `settings.watching.label_selectors`), so
another tenant's objects never reach the operator: children only with the
operator's `managed-by` label and an LLMDeployment's name, pods only the
model servers'. Lists come in pages (`limit` + `continue`), so not even the
operator's own objects arrive in one response. The LLMDeployments themselves
are all the operator's to serve and are watched without a selector.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import kopf

from modelplane.api import contract
from modelplane.operator.kube.resources import PODS, ResourceType

# Label -> required value; None: the label must be present, with any value.
LabelRequirements = Mapping[str, str | None]

# Every child the operator creates carries these (builders/naming.py `child_labels`).
MANAGED_LABELS: Final[LabelRequirements] = {
    contract.LABEL_MANAGED_BY: contract.MANAGED_BY,
    contract.LABEL_LLMDEPLOYMENT: None,
}
# The model servers' pods, labelled by their Deployment's template.
MODEL_POD_LABELS: Final[LabelRequirements] = {
    **MANAGED_LABELS,
    contract.LABEL_COMPONENT: contract.COMPONENT_MODEL_SERVER,
}
# Objects per list response: client-go's informers page by 500 too. A page of
# Deployments is about 2 MiB of JSON at most, a small share of the operator's memory.
LIST_PAGE_SIZE: Final = 500


def label_selector(labels: LabelRequirements) -> str:
    """The `labelSelector` query of `labels`: `key=value` or, for any value, `key`."""
    return ",".join(
        key if value is None else f"{key}={value}" for key, value in sorted(labels.items())
    )


def kopf_label_filter(labels: LabelRequirements) -> dict[str, Any]:
    """The same requirements as a kopf handler's `labels=` filter (checked on arrival)."""
    return {key: kopf.PRESENT if value is None else value for key, value in labels.items()}


def watch_selectors(children: Iterable[ResourceType]) -> dict[ResourceType, str]:
    """The selector of each kind the operator lists and watches besides LLMDeployments."""
    selectors = {rtype: label_selector(MANAGED_LABELS) for rtype in children}
    selectors[PODS] = label_selector(MODEL_POD_LABELS)
    return selectors


def scope_watches(
    settings: kopf.OperatorSettings,
    selectors: Mapping[ResourceType, str],
    page_size: int = LIST_PAGE_SIZE,
) -> None:
    """Make kopf send `selectors` with every list and watch of their kinds, and page lists.

    Call it from a startup handler: kopf starts listing only after those finish.
    """
    for rtype, selector in selectors.items():
        settings.watching.label_selectors[rtype.group, rtype.version, rtype.plural] = selector
    settings.watching.chunk_size = page_size
