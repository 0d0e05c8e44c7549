"""Turn `spec.model.source` into what the server container needs: a --model value and mounts.

hf:// is downloaded by the engine into the cache volume at the pinned
revision; pvc:// mounts the claim read-only under /models; s3:// is streamed
by vLLM's Run:ai model streamer (the server image must include it, with
credentials from the environment); file:// is a path inside the image,
for local and development use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from modelplane.api.llmdeployment import ModelSpec, SourceScheme

MODELS_MOUNT: Final = "/models"
DEFAULT_REVISION: Final = "main"


@dataclass(frozen=True)
class ModelLocation:
    model: str  # the server's --model
    engine_args: list[str] = field(default_factory=list)  # extra vLLM flags the source needs
    volumes: list[dict[str, Any]] = field(default_factory=list)
    mounts: list[dict[str, Any]] = field(default_factory=list)


def locate_model(model: ModelSpec) -> ModelLocation:
    scheme, location = model.scheme, model.location
    if scheme is SourceScheme.HF:
        args = [] if model.revision == DEFAULT_REVISION else [f"--revision={model.revision}"]
        return ModelLocation(model=location.strip("/"), engine_args=args)
    if scheme is SourceScheme.PVC:
        claim, _, path = location.partition("/")
        return ModelLocation(
            model=f"{MODELS_MOUNT}/{path}".rstrip("/"),
            volumes=[
                {
                    "name": "model",
                    "persistentVolumeClaim": {"claimName": claim, "readOnly": True},
                }
            ],
            mounts=[{"name": "model", "mountPath": MODELS_MOUNT, "readOnly": True}],
        )
    if scheme is SourceScheme.S3:
        return ModelLocation(model=model.source, engine_args=["--load-format=runai_streamer"])
    return ModelLocation(model=location if location.startswith("/") else f"/{location}")
