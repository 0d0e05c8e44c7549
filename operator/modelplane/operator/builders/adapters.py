"""LoRA adapters in the pod template: when LoRA is on, and where a replica finds an adapter.

The adapters themselves are not in the pod template: the operator loads and
unloads them on running replicas through the server's admin API, so adding,
removing or changing one restarts nothing. What the template does carry is
whether LoRA is on at all (vLLM reserves memory for it and must be started
with it): on while `spec.adapters` is non-empty, or while the engine's LoRA
settings (`engine.maxLoras`, `engine.maxLoraRank`) are set. So a model's
first adapter restarts its replicas once, and so does removing its last one
(LoRA off frees that memory again); a model whose engine settings keep LoRA
on never restarts for adapters. With LoRA on, the server also listens on the
admin port, which only the operator may reach (the NetworkPolicy).

Pure functions of the typed spec.
"""

from __future__ import annotations

from typing import Final

from modelplane.api.engine import EngineConfig
from modelplane.api.llmdeployment import AdapterSpec, LLMDeploymentSpec, SourceScheme
from modelplane.operator.builders.model_source import MODELS_MOUNT

# vLLM's adapter slots per batch when spec.adapters turns LoRA on and the engine settings
# name none: a fixed number, so adding adapters never changes the template. Adapters past
# it still serve (vLLM swaps them in per batch); engine.maxLoras raises it.
DEFAULT_MAX_LORAS: Final = 4


def serves_lora(spec: LLMDeploymentSpec) -> bool:
    """Whether the replicas start with LoRA on (and with the admin port)."""
    return bool(spec.adapters) or spec.engine.serves_lora


def engine_settings(spec: LLMDeploymentSpec) -> EngineConfig:
    """The engine settings the replicas start with: the spec's, with LoRA turned on when
    adapters are configured and the spec names no LoRA setting itself."""
    engine = spec.engine.engine_config()
    if spec.adapters and not engine.serves_lora:
        return engine.model_copy(update={"max_loras": DEFAULT_MAX_LORAS})
    return engine


def adapter_location(adapter: AdapterSpec, spec: LLMDeploymentSpec) -> str | None:
    """The source as a replica can load it, or None when it cannot.

    hf://, s3:// and file:// sources are passed on as written. A pvc:// source
    is only reachable on the claim the replicas already mount (the model's own
    pvc:// claim, under /models): mounting another claim would change the pod
    template, i.e. restart every replica for an adapter.
    """
    if adapter.scheme is not SourceScheme.PVC:
        return adapter.source
    claim, _, path = adapter.location.partition("/")
    model = spec.model
    if model.scheme is SourceScheme.PVC and model.location.partition("/")[0] == claim:
        return f"file://{MODELS_MOUNT}/{path}".rstrip("/")
    return None


def unreachable_source_message(adapter: AdapterSpec, spec: LLMDeploymentSpec) -> str:
    """Why `adapter_location` found no location, for the adapter's status."""
    claim = adapter.location.partition("/")[0]
    mounted = (
        f"the replicas mount only the model's claim {spec.model.location.partition('/')[0]!r}"
        if spec.model.scheme is SourceScheme.PVC
        else "the replicas mount no claim (the model is not on a pvc:// source)"
    )
    return (
        f"claim {claim!r} is not mounted: {mounted}; put the adapter on that claim, or use an "
        "hf://, s3:// or file:// source"
    )
