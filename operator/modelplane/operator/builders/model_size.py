"""How much disk a model's weights take, for sizing the cache's ephemeral-storage request.

`spec.model.size` wins when given. Otherwise the parameter count is read
from the source's last path segment, the way model repositories name
themselves (`Llama-3.1-8B-Instruct`, `SmolLM2-135M`, `Mixtral-8x7B`), and
multiplied by the bytes one parameter takes at the spec's quantization. A
name that says nothing yields None and the caller falls back to the
operator's `modelCache.sizeLimit`. The estimate adds a quarter for
tokenizer files, the repository's other formats and the engine's compile
cache, and is rounded up to whole GiB.
"""

from __future__ import annotations

import math
import re
from typing import Final

from modelplane.api.engine import Quantization
from modelplane.api.llmdeployment import LLMDeploymentSpec

GIB: Final = 1024**3
HEADROOM: Final = 1.25
# 8B, 0.5B, 135M, 1.5b, 8x7B (mixture of experts: experts x size).
_PARAMETERS: Final = re.compile(r"(?:^|[-_.])(?:(\d+)x)?(\d+(?:\.\d+)?)([BbMm])(?=$|[-_.])")
# Bytes per parameter as stored: 16-bit by default, 8-bit for fp8, about 4.5 bits for the
# 4-bit formats (scales and zero points included).
_BYTES_PER_PARAMETER: Final[dict[Quantization, float]] = {
    Quantization.FP8: 1.0,
    Quantization.AWQ: 0.57,
    Quantization.GPTQ: 0.57,
    Quantization.GGUF: 0.57,
    Quantization.BITSANDBYTES: 0.57,
}


def parameter_count(source: str) -> float | None:
    """Parameters the source's name announces (`hf://org/Llama-3.1-8B` -> 8e9), or None."""
    name = source.rstrip("/").rsplit("/", 1)[-1]
    best: float | None = None
    for experts, number, unit in _PARAMETERS.findall(name):
        count = float(number) * (1e9 if unit in "Bb" else 1e6) * (int(experts) if experts else 1)
        best = count if best is None else max(best, count)
    return best


def estimated_disk_gib(spec: LLMDeploymentSpec) -> int | None:
    """Whole GiB the weights and caches need on disk, or None when nothing says."""
    count = parameter_count(spec.model.source)
    if count is None:
        return None
    per_parameter = _BYTES_PER_PARAMETER.get(spec.engine.quantization, 2.0)
    return max(1, math.ceil(count * per_parameter * HEADROOM / GIB))


def cache_size(spec: LLMDeploymentSpec, fallback: str) -> str:
    """The quantity to request for the model cache: the spec's, the estimate, else `fallback`."""
    if spec.model.size:
        return spec.model.size
    estimate = estimated_disk_gib(spec)
    return f"{estimate}Gi" if estimate is not None else fallback
