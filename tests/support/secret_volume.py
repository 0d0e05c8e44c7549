"""A Secret volume as the kubelet lays it out and updates it, for key-rotation tests.

The kubelet writes each version of a Secret into a fresh hidden directory
(`..2026_05_01_12_00_00.123456789`), points the `..data` symlink at it, and
exposes each key as a symlink through `..data` (`keys -> ..data/keys`). An
update writes the new directory, makes a temporary symlink to it and renames
that over `..data` (one atomic step), then deletes the old directory. So the
path a process opened never changes, but after the swap it resolves to a
different file; a reader watching the old file's inode sees nothing happen.
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path

_versions = itertools.count()


class SecretVolume:
    def __init__(self, root: Path, files: dict[str, str]) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        current = self._write_version(files)
        (root / "..data").symlink_to(current.name)
        for name in files:
            (root / name).symlink_to(f"..data/{name}")

    def path(self, name: str) -> Path:
        return self.root / name

    def update(self, files: dict[str, str]) -> None:
        """Swap in new content the kubelet's way (the set of file names stays the same)."""
        data = self.root / "..data"
        old = self.root / os.readlink(data)
        fresh = self._write_version(files)
        swap = self.root / "..data_tmp"
        swap.symlink_to(fresh.name)
        os.rename(swap, data)  # atomic: a reader sees the old version or the new one
        shutil.rmtree(old)

    def _write_version(self, files: dict[str, str]) -> Path:
        version = self.root / f"..2026_05_01_12_00_00.{next(_versions):09d}"
        version.mkdir()
        for name, text in files.items():
            (version / name).write_text(text)
        return version
