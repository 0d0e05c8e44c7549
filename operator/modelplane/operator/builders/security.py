"""The security contexts every pod the operator creates runs with.

Non-root (the user `Dockerfile.server` creates), a read-only root
filesystem, all capabilities dropped, no privilege escalation, the runtime's
default seccomp profile. Volumes are group-owned by the same user; the
ownership walk is skipped when the volume's root already matches, which
keeps a large shared cache from delaying every start.
"""

from __future__ import annotations

from typing import Any, Final

SERVER_UID: Final = 10001  # the user Dockerfile.server creates


def pod_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": SERVER_UID,
        "runAsGroup": SERVER_UID,
        "fsGroup": SERVER_UID,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
