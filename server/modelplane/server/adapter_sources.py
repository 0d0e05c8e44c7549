"""Where an adapter given to the admin API comes from: its source URL, made a local directory.

Sources are spelled like a model's (`spec.model.source`):
- `file:///ABS/PATH`: a directory on this machine (in a pod: in the image);
- `pvc://CLAIM/PATH`: PATH on the claim the operator mounts at `VOLUMES/CLAIM`
  (`--adapter-volumes`, default `/adapters`); it may not lead out of the claim;
- `hf://ORG/NAME`: downloaded from the Hugging Face Hub at `revision` (default
  `main`) into `--adapter-cache-dir`, with `HF_TOKEN` from the environment;
- `s3://`: taken, then refused with a reason (the server image has no S3 client for
  adapters), so the adapter is listed `failed` with it.

`source_problem` is the pure check of the URL (a 400); `fetch_adapter`
does the I/O and raises `SourceError` (with the HTTP status the admin API
answers) when the files cannot be had.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

from modelplane.server.model_download import DownloadError, download, repository

SCHEMES: Final = ("file://", "pvc://", "hf://", "s3://")
MAX_SOURCE_CHARS: Final = 2048
DEFAULT_HF_REVISION: Final = "main"


class SourceError(Exception):
    """The adapter's files cannot be had; `status` is the admin API's answer (422 or 502)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class SourceRoots:
    volumes: Path  # pvc://CLAIM/PATH is volumes/CLAIM/PATH
    cache: Path | None = None  # hf:// downloads; None: under the temporary directory

    @property
    def download_dir(self) -> Path:
        return self.cache or Path(tempfile.gettempdir()) / "modelplane-adapters"


def _relative_parts(path: str) -> list[str] | None:
    """The segments of a path with no `..`, `.` or empty ones; None when it has any."""
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        return None
    return parts


def source_problem(source: str) -> str | None:
    """Why `source` is not an adapter source this server takes, or None."""
    if len(source) > MAX_SOURCE_CHARS:
        return f"source is longer than {MAX_SOURCE_CHARS} characters"
    if "\x00" in source or any(ord(c) < 0x20 for c in source):
        return "source holds control characters"
    if source.startswith("file://"):
        path = source.removeprefix("file://")
        if not path.startswith("/") or _relative_parts(path.strip("/")) is None:
            return "a file:// source is an absolute path without '.' or '..' (file:///ABS/PATH)"
        return None
    if source.startswith("pvc://"):
        rest = source.removeprefix("pvc://").strip("/")
        parts = _relative_parts(rest)
        if parts is None or len(parts) < 1:
            return "a pvc:// source is pvc://CLAIM/PATH, without '.' or '..' segments"
        return None
    if source.startswith("hf://"):
        try:
            repository(source)
        except DownloadError as err:
            return str(err)
        return None
    if source.startswith("s3://"):
        if not source.removeprefix("s3://").strip("/"):
            return "an s3:// source is s3://BUCKET/PATH"
        return None  # well formed, but not fetched here: fetch_adapter says so (422)
    return f"source must start with one of {', '.join(SCHEMES)}"


def local_path(source: str, roots: SourceRoots) -> Path | None:
    """The directory of a file:// or pvc:// source (checked by `source_problem`); None for
    a source that must be downloaded."""
    if source.startswith("file://"):
        return Path(PurePosixPath(source.removeprefix("file://")))
    if source.startswith("pvc://"):
        return roots.volumes / source.removeprefix("pvc://").strip("/")
    return None


def fetch_adapter(source: str, revision: str | None, roots: SourceRoots) -> Path:
    """A local directory holding the adapter of `source` (blocking: call it off the loop)."""
    if source.startswith("s3://"):
        raise SourceError(
            422,
            "s3:// adapter sources are not fetched by this server; copy the adapter to the "
            "model's volume (pvc://) or publish it (hf://)",
        )
    path = local_path(source, roots)
    if path is not None:
        if not path.is_dir():
            where = f" (claim mounted at {roots.volumes})" if source.startswith("pvc://") else ""
            raise SourceError(422, f"{source}: no such directory {path}{where}")
        return path
    try:
        return download(
            source,
            revision or DEFAULT_HF_REVISION,
            roots.download_dir,
            lambda _message: None,
            hub_dir=roots.download_dir / "hub",
        )
    except DownloadError as err:
        raise SourceError(502, str(err)) from err
