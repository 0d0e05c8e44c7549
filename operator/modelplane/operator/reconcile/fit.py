"""Will this LLMDeployment run here? Checks against the operator's accelerator profiles.

An LLMDeployment asking for something its accelerator cannot do (fp8 weights
on an A100, GPUs on the CPU profile, an unknown profile) would otherwise
become pods that crash while loading. These checks run before any child is
written; each problem is one line that says what to change, and the
resource goes to phase Failed with a FitCheck condition carrying them.
"""

from __future__ import annotations

from dataclasses import dataclass

from modelplane.api.engine import ModelFacts, engine_config_problems
from modelplane.api.llmdeployment import LLMDeploymentSpec, name_problem
from modelplane.operator.config import AcceleratorProfile, OperatorConfig


@dataclass(frozen=True)
class Placement:
    """The accelerator profile a spec resolves to, and the compute of one replica."""

    accelerator: str
    profile: AcceleratorProfile
    cpu: str
    memory: str

    @property
    def on_gpu(self) -> bool:
        return self.profile.has_gpus


def accelerator_name(spec: LLMDeploymentSpec, config: OperatorConfig) -> str:
    if spec.resources.accelerator:
        return spec.resources.accelerator
    if spec.resources.gpus > 0:
        return config.default_gpu_accelerator
    return config.default_cpu_accelerator


def resolve_placement(spec: LLMDeploymentSpec, config: OperatorConfig) -> Placement | None:
    """The placement for `spec`, or None when its accelerator profile does not exist."""
    name = accelerator_name(spec, config)
    profile = config.accelerators.get(name)
    if profile is None:
        return None
    return Placement(
        accelerator=name,
        profile=profile,
        cpu=spec.resources.cpu or profile.replica_cpu(spec.resources.gpus),
        memory=spec.resources.memory or profile.replica_memory(spec.resources.gpus),
    )


def cache_problems(spec: LLMDeploymentSpec, config: OperatorConfig) -> list[str]:
    """An unknown cache profile name."""
    name = spec.model.cache_profile
    if name is None or name in config.cache_profiles:
        return []
    known = ", ".join(sorted(config.cache_profiles)) or "none configured"
    return [
        f"model.cacheProfile {name} is not a cache profile of this operator (known: {known}); "
        "use one of them, add it to the operator config (cacheProfiles), or remove the field"
    ]


def fit_problems(name: str, spec: LLMDeploymentSpec, config: OperatorConfig) -> list[str]:
    """Reasons `spec` cannot run with this operator configuration; empty means it fits."""
    problems: list[str] = []
    if (reason := name_problem(name)) is not None:
        problems.append(reason)
    problems += cache_problems(spec, config)
    accelerator = accelerator_name(spec, config)
    placement = resolve_placement(spec, config)
    if placement is None:
        known = ", ".join(sorted(config.accelerators))
        problems.append(
            f"resources.accelerator {accelerator} is not an accelerator profile of this "
            f"operator (known: {known}); use one of them or add it to the operator config"
        )
        return problems
    gpus = spec.resources.gpus
    if gpus > 0 and not placement.on_gpu:
        problems.append(
            f"accelerator {accelerator} has no GPUs but resources.gpus is {gpus}; "
            "set resources.gpus to 0 or pick a GPU accelerator"
        )
    if gpus == 0 and placement.on_gpu:
        problems.append(
            f"accelerator {accelerator} is a GPU profile but resources.gpus is 0; "
            "set resources.gpus to at least 1, or remove resources.accelerator to serve on CPU"
        )
    engine = spec.engine.engine_config()
    # The server refuses these combinations at start-up; saying so here saves a crash loop.
    problems += engine_config_problems(engine, ModelFacts(), on_gpu=placement.on_gpu)
    quantization = engine.quantization
    if quantization not in placement.profile.quantizations and not any(
        p.startswith(f"quantization {quantization.value}") for p in problems
    ):
        able = sorted(n for n, p in config.accelerators.items() if quantization in p.quantizations)
        problems.append(
            f"quantization {quantization.value} is not supported on {accelerator}; "
            f"use an accelerator that supports it ({', '.join(able) or 'none configured'}) "
            "or a checkpoint with another quantization"
        )
    return problems
