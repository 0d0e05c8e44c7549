"""What Kubernetes discovery trusts: Services the operator owns, and one owner per model name.

Labels and annotations are written by whoever may create a Service, so they
say what a Service claims, not who made it. A model Service takes traffic
only if it also carries the operator's `app.kubernetes.io/managed-by` label
and an owner reference to an LLMDeployment (kind and apiVersion from
`modelplane.api.contract`) that exists in its namespace with that uid. The
watched namespaces bound where such Services are looked for at all.

Two LLMDeployments may claim one model name (two namespaces, or two in one
namespace with the same `servedName`). They are not merged: the one created
first keeps the name (ties: namespace, then name, in order), the others'
Services are refused until the first goes away, and each refusal is logged
and counted (`modelplane_gateway_model_name_conflicts`). First come, first
served keeps an existing model's traffic where it is when someone else
deploys the same name later.

Everything here is a pure function of the watched objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelplane.api import contract

ObjectKey = tuple[str, str]  # (namespace, name)
DEFAULT_KEYS_FIELD = "keys"  # SecretKeyRef.key's default in the CRD


@dataclass(frozen=True)
class SecretRef:
    """A key of a Secret, as an LLMDeployment's `auth.apiKeySecretRef` names it."""

    namespace: str
    name: str
    key: str


@dataclass(frozen=True)
class Owner:
    """An LLMDeployment, as far as routing needs it."""

    namespace: str
    name: str
    uid: str
    created: str  # metadata.creationTimestamp, RFC 3339 in UTC: sorts as time does
    key_ref: SecretRef | None  # the key its servers require, if any

    @property
    def key(self) -> ObjectKey:
        return (self.namespace, self.name)

    def order(self) -> tuple[str, str, str]:
        """Which of two claims to one model name comes first."""
        return (self.created, self.namespace, self.name)

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


def owner_of(obj: Mapping[str, Any]) -> Owner | None:
    """The LLMDeployment an object of the API describes (None if it has no name or uid)."""
    meta = obj.get("metadata") or {}
    name, uid = meta.get("name"), meta.get("uid")
    if not isinstance(name, str) or not isinstance(uid, str) or not name or not uid:
        return None
    namespace = meta.get("namespace") or "default"
    spec = obj.get("spec")
    auth = spec.get("auth") if isinstance(spec, Mapping) else None
    ref = auth.get("apiKeySecretRef") if isinstance(auth, Mapping) else None
    key_ref = None
    if isinstance(ref, Mapping) and isinstance(ref.get("name"), str) and ref["name"]:
        key = ref.get("key")
        key_ref = SecretRef(
            namespace, ref["name"], key if isinstance(key, str) and key else DEFAULT_KEYS_FIELD
        )
    created = meta.get("creationTimestamp")
    return Owner(namespace, name, uid, created if isinstance(created, str) else "", key_ref)


def llmdeployment_reference(meta: Mapping[str, Any]) -> tuple[str, str] | None:
    """(name, uid) of the LLMDeployment among an object's owner references.

    The operator writes one, as controller; a reference to another kind, or
    to an LLMDeployment of another API version, is not it.
    """
    for ref in meta.get("ownerReferences") or []:
        if not isinstance(ref, Mapping):
            continue
        if ref.get("kind") != contract.KIND or ref.get("apiVersion") != contract.API_VERSION:
            continue
        name, uid = ref.get("name"), ref.get("uid")
        if isinstance(name, str) and isinstance(uid, str) and name and uid:
            return (name, uid)
    return None


def untrusted_reason(
    namespace: str,
    managed: bool,
    reference: tuple[str, str] | None,
    owners: Mapping[ObjectKey, Owner],
) -> str | None:
    """Why a model Service may not take traffic, or None if the operator owns it."""
    if not managed:
        return f"it lacks the label {contract.LABEL_MANAGED_BY}={contract.MANAGED_BY}"
    if reference is None:
        return f"it has no owner reference to a {contract.API_VERSION} {contract.KIND}"
    name, uid = reference
    owner = owners.get((namespace, name))
    if owner is None:
        return f"its owner, {contract.KIND} {namespace}/{name}, does not exist"
    if owner.uid != uid:
        return f"its owner reference's uid is not that of {contract.KIND} {namespace}/{name}"
    return None


@dataclass(frozen=True)
class NameConflict:
    """LLMDeployments refused because an earlier one serves the same model name."""

    model: str
    winner: Owner
    refused: tuple[Owner, ...]


def claim_model_names(
    claims: Mapping[str, set[Owner]],
) -> tuple[dict[str, Owner], list[NameConflict]]:
    """The owner of each model name (the earliest claim), and the claims refused."""
    winners: dict[str, Owner] = {}
    conflicts: list[NameConflict] = []
    for model in sorted(claims):
        ordered = sorted(claims[model], key=Owner.order)
        winners[model] = ordered[0]
        if len(ordered) > 1:
            conflicts.append(NameConflict(model, ordered[0], tuple(ordered[1:])))
    return winners, conflicts
