"""`modelplane model download`: fetch an hf:// model into a cache directory, once.

A cache profile's download Job runs this so that the replicas, which mount
the cache read-only with `HF_HUB_OFFLINE=1`, find every file the engine
loads. Only one copy of the weights is fetched: repositories often carry the
same weights in several formats (safetensors, PyTorch `.bin`, the original
`consolidated.*.pth`, TensorFlow, Flax, ONNX), and the engine reads
safetensors whenever they exist. `compile/` is created beside the download
so that the replicas, running as the same user, can keep their compile
caches there. Credentials come from `HF_TOKEN` in the environment.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final

OTHER_FORMATS: Final = ("*.msgpack", "*.h5", "*.onnx", "*.ot", "*.tflite")
PYTORCH_FORMATS: Final = ("*.bin", "*.pt", "*.pth", "original/*")


class DownloadError(Exception):
    """The model cannot be downloaded; the message says why and what to check."""


def ignored_patterns(files: Iterable[str]) -> list[str]:
    """Files not to fetch, given the repository's file list."""
    names = list(files)
    if any(name.endswith(".safetensors") for name in names):
        return [*PYTORCH_FORMATS, *OTHER_FORMATS]
    return list(OTHER_FORMATS)


def repository(source: str) -> str:
    if not source.startswith("hf://"):
        raise DownloadError(f"only hf:// sources are downloaded (got {source!r})")
    repo = source.removeprefix("hf://").strip("/")
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise DownloadError(f"an hf:// source names ORG/NAME (got {source!r})")
    return repo


def download(
    source: str,
    revision: str,
    cache_dir: Path,
    progress: Callable[[str], None],
    *,
    hub_dir: Path | None = None,
) -> Path:
    """Download `source` at `revision` under `cache_dir`/huggingface (or `hub_dir`: the
    server's adapter downloads, beside a read-only model cache); returns the snapshot."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    repo = repository(source)
    hub = hub_dir or Path(os.environ.get("HF_HOME", cache_dir / "huggingface")) / "hub"
    (cache_dir / "compile").mkdir(parents=True, exist_ok=True)
    progress(f"listing {repo} at {revision}")
    try:
        files = HfApi().list_repo_files(repo, revision=revision)
        progress(f"downloading {repo} at {revision} into {hub} ({len(files)} files in the repo)")
        path = snapshot_download(
            repo, revision=revision, cache_dir=hub, ignore_patterns=ignored_patterns(files)
        )
    except HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else None
        hint = (
            "; the repository is gated or private: put a token that may read it in the "
            "Secret of spec.model.credentialsSecretRef (key HF_TOKEN)"
            if status in (401, 403)
            else ""
        )
        raise DownloadError(f"downloading {repo} at {revision} failed: {err}{hint}") from err
    except Exception as err:  # offline, DNS, TLS, a reset connection: all say the same
        raise DownloadError(
            f"cannot reach the Hugging Face Hub for {repo} ({type(err).__name__}: {err}); "
            "check the pod's egress (NetworkPolicy, proxy, HF_ENDPOINT)"
        ) from err
    return Path(path)


def run_download(source: str, revision: str, cache_dir: Path) -> int:
    def say(message: str) -> None:
        print(f"modelplane model download: {message}", file=sys.stderr, flush=True)

    try:
        path = download(source, revision, cache_dir, say)
    except DownloadError as err:
        say(str(err))
        return 1
    say(f"done: {path}")
    print(path)
    return 0
