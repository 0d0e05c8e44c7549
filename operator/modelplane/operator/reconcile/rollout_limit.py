"""How many models a change of the operator itself may re-template at once.

A new operator version or a change of its config (an image, a probe, the
drain) can change the pod template of every model at the same moment, and
each rollout wants a spare GPU for its surge replica. So a model whose
template changes for that reason waits while `maxConcurrentOperatorRollouts`
models are rolling out (for whatever reason): it keeps the template it runs,
and its status says it waits (condition Progressing, reason RolloutQueued).

A change of the model's own spec is never held back. To tell the two apart,
each Deployment carries the hash of the LLMDeployment spec that produced its
template (`modelplane.io/model-spec-hash`). `spec.replicas` is left out of
it: the autoscaler writes it through the scale subresource, which bumps the
resource's generation, so a generation would mark every autoscaled model as
changed by its owner. `spec.adapters` is left out too, but for whether they turn
LoRA on: the operator loads adapters into running replicas, so adding one must
not touch the Deployment. A template that differs under the same spec hash is
the operator's doing; a Deployment without the annotation (written by an
operator before this one) counts as the operator's too, since an operator
upgrade is exactly when that happens.

Pure: what the reconciler observed in, a decision out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from modelplane.operator.builders.hashing import stable_hash
from modelplane.operator.reconcile.observed import ObservedDeployment
from modelplane.operator.reconcile.rollout import (
    NEW_REPLICA_SET_AVAILABLE,
    PROGRESS_DEADLINE_EXCEEDED,
)

ROLLOUT_QUEUED: Final = "RolloutQueued"


class TemplateChange(StrEnum):
    NONE = "None"  # no Deployment yet, or it runs the desired template
    OWN_SPEC = "OwnSpec"  # the model's spec changed since the template was written
    OPERATOR = "Operator"  # same spec, another template: the operator changed


def model_spec_hash(raw_spec: Mapping[str, Any], *, lora_by_adapters: bool = False) -> str:
    """Hash of the LLMDeployment's spec as stored, less `replicas` (the autoscaler's) and
    less the adapters, which are loaded into running replicas. `lora_by_adapters`: the
    adapters are what turns LoRA on in the template (builders/adapters.py), which counts."""
    content = {k: v for k, v in raw_spec.items() if k not in ("replicas", "adapters")}
    if lora_by_adapters:
        content["adapters"] = True
    return stable_hash(content)


def template_change(
    deployment: ObservedDeployment | None, *, target_template_hash: str, spec_hash: str
) -> TemplateChange:
    """Why (if at all) the running template differs from the desired one."""
    if deployment is None or deployment.template_hash == target_template_hash:
        return TemplateChange.NONE
    if deployment.model_spec_hash is not None and deployment.model_spec_hash != spec_hash:
        return TemplateChange.OWN_SPEC
    return TemplateChange.OPERATOR


def rolling_out(deployment: ObservedDeployment | None) -> bool:
    """The Deployment is replacing or starting replicas (and has not given up)."""
    d = deployment
    if d is None:
        return False
    progressing = d.condition("Progressing")
    if progressing is not None and progressing.reason == PROGRESS_DEADLINE_EXCEEDED:
        return False  # stalled: it holds no slot (status says Degraded)
    caught_up = d.generation is None or (
        d.observed_generation is not None and d.observed_generation >= d.generation
    )
    if not caught_up or d.updated_replicas < d.spec_replicas or d.replicas > d.spec_replicas:
        return True
    settled = progressing is not None and progressing.reason == NEW_REPLICA_SET_AVAILABLE
    return not settled and max(d.ready_replicas, d.available_replicas) < d.spec_replicas


@dataclass(frozen=True)
class RolloutGate:
    hold: bool
    message: str = ""


GO: Final = RolloutGate(hold=False)


def gate_rollout(
    change: TemplateChange, *, rolling_here: bool, rolling_elsewhere: int, limit: int
) -> RolloutGate:
    """Hold an operator-caused re-template while `limit` other models roll out.

    A model already rolling out takes the new template at once: its rollout
    already has the spare capacity it needs.
    """
    if change is not TemplateChange.OPERATOR or rolling_here or rolling_elsewhere < limit:
        return GO
    return RolloutGate(
        hold=True,
        message=(
            f"an operator change re-templates this model; it waits while {rolling_elsewhere} "
            f"models roll out (maxConcurrentOperatorRollouts is {limit}) and keeps serving "
            "with the template it runs"
        ),
    )
