"""Whose is an object? Its owner references say; its labels, which anyone can copy, do not.

The operator writes a child only when the name is free or the object there is
already owned by the same LLMDeployment (its UID in `ownerReferences`), and
deletes only objects owned that way. A name held by anything else (an
administrator's NetworkPolicy, another model's canary track, an object left
by a deleted LLMDeployment of the same name whose garbage collection has not
run yet) fails the resource with a message naming the object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

NOT_OWNED: Final = "NameTaken"


def owner_uids(body: Mapping[str, Any]) -> tuple[str, ...]:
    references = (body.get("metadata") or {}).get("ownerReferences") or []
    return tuple(str(reference.get("uid", "")) for reference in references)


def not_owned_message(kind: str, name: str, namespace: str) -> str:
    return (
        f"{kind} {name} already exists in namespace {namespace} and is not owned by this "
        "LLMDeployment; Modelplane does not take over objects it did not create: delete or "
        "rename that object, or give the LLMDeployment another name"
    )
