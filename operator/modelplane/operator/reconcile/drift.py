"""Manual edits of a child: the fields the operator sets, compared with what it wants.

The spec-hash annotation says which manifest the operator last applied, but
`kubectl edit deploy` can change the image, the args, the resources or the
replicas of the pod template and keep the annotation. So the observed object
is compared with the desired manifest field by field, over the fields the
desired manifest sets (what the API server adds -- defaults, status, other
controllers' annotations -- is not the operator's and is not compared):

- a mapping matches when every key the operator sets matches (extra keys are
  someone else's);
- a list matches when it has the same length and each item matches (a
  container, env var or toleration added by hand is a change);
- an empty value the operator sets matches a missing one (the API server
  omits empty fields), and resource quantities match by value ("0.5" is
  "500m").

Pure: a desired manifest and an observed object in, the paths that differ
out. `owned_view` is the observed object cut to the desired manifest's
shape, so the reconciler can remember what the API server made of its own
write (a mutating webhook may change a field on every write; re-applying
that forever would be a hot loop) and revert only what changes after it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Final

from kubernetes.utils import parse_quantity

from modelplane.operator.builders.hashing import stable_hash

# Children whose fields are compared. A Job's template is immutable once created, so a
# download Job is not re-applied for a difference: it is replaced by its own logic.
CHECKED_KINDS: Final = frozenset(
    {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor"}
)
# Where values are resource quantities: the items of these mappings, and these fields.
QUANTITY_MAPS: Final = frozenset({"requests", "limits"})
QUANTITY_FIELDS: Final = frozenset({"sizeLimit"})
# The Deployment's replicas are compared on their own (they follow the scale subresource).
NOT_COMPARED: Final[frozenset[tuple[str, ...]]] = frozenset(
    {("apiVersion",), ("kind",), ("spec", "replicas")}
)

Path = tuple[str | int, ...]


def _is_empty(value: Any) -> bool:
    return value is None or value is False or value == 0 or value in ("", [], {})


def _same_quantity(want: Any, got: Any) -> bool:
    try:
        # The client library's parser reads every form the API server writes.
        same = parse_quantity(want) == parse_quantity(got)  # type: ignore[no-untyped-call]
        return bool(same)
    except (ValueError, TypeError):
        return False


def _compare(
    want: Any,
    got: Any,
    path: Path,
    differs: list[Path],
    ignore: Collection[tuple[str, ...]],
    quantity: bool,
) -> None:
    if got is None and _is_empty(want):
        return
    if isinstance(want, Mapping):
        if not isinstance(got, Mapping):
            differs.append(path)
            return
        for key, value in want.items():
            where = (*path, key)
            if where in ignore:
                continue
            is_quantity = key in QUANTITY_FIELDS or (bool(path) and path[-1] in QUANTITY_MAPS)
            _compare(value, got.get(key), where, differs, ignore, is_quantity)
        return
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            differs.append(path)
            return
        for index, (w, g) in enumerate(zip(want, got, strict=True)):
            _compare(w, g, (*path, index), differs, ignore, False)
        return
    if want == got and type(want) is type(got):
        return
    if quantity and _same_quantity(want, got):
        return
    differs.append(path)


def drifted_fields(
    desired: Mapping[str, Any],
    observed: Mapping[str, Any],
    *,
    ignore: Collection[tuple[str, ...]] = NOT_COMPARED,
) -> list[str]:
    """The paths (`spec.template.spec.containers[0].image`) where `observed` differs from
    what `desired` sets; empty when every field the operator sets is as it wants."""
    differs: list[Path] = []
    _compare(desired, observed, (), differs, ignore, False)
    return [format_path(p) for p in differs]


def owned_view(
    desired: Any, observed: Any, *, ignore: Collection[tuple[str, ...]] = NOT_COMPARED
) -> Any:
    """`observed` cut to the shape of `desired`: only the fields the operator sets."""
    return _cut(desired, observed, (), ignore)


def owned_digest(desired: Mapping[str, Any], observed: Mapping[str, Any]) -> str:
    """A short hash of `owned_view`: what the API server made of the operator's fields."""
    return stable_hash(owned_view(desired, observed))


def _cut(want: Any, got: Any, path: Path, ignore: Collection[tuple[str, ...]]) -> Any:
    if isinstance(want, Mapping) and isinstance(got, Mapping):
        return {
            key: _cut(value, got.get(key), (*path, key), ignore)
            for key, value in want.items()
            if (*path, key) not in ignore
        }
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got):
        pairs = enumerate(zip(want, got, strict=True))
        return [_cut(w, g, (*path, i), ignore) for i, (w, g) in pairs]
    return got


def format_path(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
