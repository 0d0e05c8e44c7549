"""Is an API request allowed by a list of RBAC PolicyRules? (Kubernetes' own matching, in small.)

Used by the integration tests to check every call the operator made against
`charts/modelplane/files/operator-rbac-rules.yaml` (and the gateway's against
`gateway-rbac-rules.yaml` beside it). Discovery paths are
open to every authenticated user (the `system:discovery` ClusterRole) and
need no rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

REPO: Final = Path(__file__).resolve().parents[2]
RULES_FILE: Final = REPO / "charts" / "modelplane" / "files" / "operator-rbac-rules.yaml"
GATEWAY_RULES_FILE: Final = RULES_FILE.with_name("gateway-rbac-rules.yaml")
# /version, /api, /api/v1, /apis, /apis/GROUP, /apis/GROUP/VERSION
DISCOVERY: Final = re.compile(r"^/(version|api(/[^/]+)?|apis(/[^/]+){0,2})/?$")


@dataclass(frozen=True)
class ApiCall:
    verb: str
    group: str
    resource: str  # "deployments" or "deployments/scale"
    path: str
    name: str | None = None  # the object's name; None for a collection

    def __str__(self) -> str:
        return f"{self.verb} {self.group or 'core'}/{self.resource} ({self.path})"


def load_rules(path: Path = RULES_FILE) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = yaml.safe_load(path.read_text())
    return rules


def api_call(method: str, path: str, query: Mapping[str, str]) -> ApiCall | None:
    """The RBAC view of a request; None for discovery (no rule needed)."""
    if DISCOVERY.match(path):
        return None
    parts = path.strip("/").split("/")
    if parts[0] == "api":
        group, rest = "", parts[2:]
    elif parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        raise ValueError(f"not a Kubernetes API path: {path}")
    if rest[:1] == ["namespaces"] and len(rest) >= 3:
        rest = rest[2:]
    plural, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2:]
    resource = "/".join([plural, *sub])
    method = method.upper()
    if method == "GET":
        verb = "watch" if query.get("watch") in ("true", "1") else ("get" if name else "list")
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch"}[method]
    return ApiCall(verb, group, resource, path, name)


def allowed(call: ApiCall, rules: Iterable[Mapping[str, Any]]) -> bool:
    return any(
        (call.group in rule.get("apiGroups", []) or "*" in rule.get("apiGroups", []))
        and (call.resource in rule.get("resources", []) or "*" in rule.get("resources", []))
        and (call.verb in rule.get("verbs", []) or "*" in rule.get("verbs", []))
        and _names_match(call, rule.get("resourceNames"))
        for rule in rules
    )


def _names_match(call: ApiCall, names: list[str] | None) -> bool:
    """A rule with resourceNames allows only requests for one of those objects (a list or
    watch narrowed to one name by a field selector is not modelled here: refused)."""
    return not names or (call.name is not None and call.name in names)


def disallowed_calls(
    requests: Iterable[tuple[str, str, Mapping[str, str]]], rules: list[dict[str, Any]]
) -> list[ApiCall]:
    """The calls among `requests` (method, path, query) that `rules` do not allow."""
    refused = []
    for method, path, query in requests:
        call = api_call(method, path, query)
        if call is not None and not allowed(call, rules):
            refused.append(call)
    return refused
