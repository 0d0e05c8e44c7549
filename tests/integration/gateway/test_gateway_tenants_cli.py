"""`modelplane gateway --tenants` through its entry point: what a mistake in the file or
the flags prints, before anything listens."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import MODELPLANE


def gateway(*flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*MODELPLANE, "gateway", "--port", "0", "--metrics-port", "0", *flags],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture
def models(tmp_path: Path) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text("models:\n  m:\n    upstreams: [http://127.0.0.1:9]\n")
    return path


def test_a_bad_tenants_file_stops_the_gateway_naming_tenant_and_field(
    tmp_path: Path, models: Path
) -> None:
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(
        "tenants:\n  team-a: {keys: [sk-team-a-0001], weight: 0}\n"
        "  team-b: {keyFile: missing.keys}\n"
    )
    done = gateway("--config", str(models), "--tenants", str(tenants))
    assert done.returncode == 2
    assert "tenants.team-a.weight" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--api-key-file", "keys"], "give tenants or api_key_file, not both"),
        (["--redis-url", "http://redis:6379"], "must start with redis://"),
        (["--redis-failure", "sometimes"], "invalid choice"),
        (["--max-queued-per-tenant", "0"], "max_queued_per_tenant"),
    ],
)
def test_flags_that_cannot_work_together_are_refused(
    tmp_path: Path, models: Path, flags: list[str], says: str
) -> None:
    tenants = tmp_path / "tenants.yaml"
    tenants.write_text("tenants:\n  team-a: {keys: [sk-team-a-0001]}\n")
    (tmp_path / "keys").write_text("sk-key-00000001\n")
    done = gateway("--config", str(models), "--tenants", str(tenants), *flags)
    assert done.returncode == 2
    assert says in done.stderr and "Traceback" not in done.stderr


def test_redis_without_tenants_is_refused(models: Path) -> None:
    done = gateway("--config", str(models), "--redis-url", "redis://127.0.0.1:6379/0")
    assert done.returncode == 2 and "it needs tenants" in done.stderr
