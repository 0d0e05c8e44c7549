"""Decide an API request against a ValidatingAdmissionPolicy, as the API server does, in small.

No API server runs here, so the chart's policies (rendered by helm) are
evaluated with `celpy`, a CEL interpreter: the request is matched against
`matchConstraints` (resource rules, excluding `excludeResourceRules`; `*`
is every resource but no subresource, `*/*` both), then `matchConditions`;
a matching request's `variables` are computed in order and each validation
must hold, else it is denied with the rule's `messageExpression` (or
`message`). An expression that fails to evaluate denies the request, as
`failurePolicy: Fail` does. Only what the chart's policies use is covered:
no params, no namespace or object selectors, no audit annotations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import celpy
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError


@dataclass(frozen=True)
class Request:
    """One admission request: who, which resource (and subresource), what, before/after."""

    username: str
    group: str
    resource: str
    operation: str  # CREATE, UPDATE, DELETE
    name: str = "x"
    namespace: str = "team"
    sub_resource: str = ""
    object: Mapping[str, Any] | None = None
    old_object: Mapping[str, Any] | None = None
    version: str = "v1"

    def cel(self) -> dict[str, Any]:
        return {
            "request": {
                "resource": {
                    "group": self.group, "version": self.version, "resource": self.resource
                },
                "subResource": self.sub_resource,
                "name": self.name,
                "namespace": self.namespace,
                "operation": self.operation,
                "userInfo": {"username": self.username, "groups": []},
            },
            "object": self.object,
            "oldObject": self.old_object,
        }  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    applies: bool  # the policy matched the request
    allowed: bool
    messages: tuple[str, ...] = field(default=())


def _rule_matches(rule: Mapping[str, Any], request: Request) -> bool:
    def listed(values: list[str], value: str) -> bool:
        return "*" in values or value in values

    if not listed(rule.get("apiGroups", []), request.group):
        return False
    if not listed(rule.get("operations", []), request.operation):
        return False
    for pattern in rule.get("resources", []):
        resource, _, sub = pattern.partition("/")
        if resource not in ("*", request.resource):
            continue
        if (sub == "" and request.sub_resource == "") or sub in ("*", request.sub_resource):
            return True
    return False


def _evaluate(env: celpy.Environment, expression: str, activation: dict[str, Any]) -> Any:
    program = env.program(env.compile(expression))
    try:
        return program.evaluate(activation)
    except CELEvalError as err:
        return err


def decide(policy: Mapping[str, Any], request: Request) -> Verdict:
    spec = policy["spec"]
    constraints = spec["matchConstraints"]
    if not any(_rule_matches(r, request) for r in constraints["resourceRules"]):
        return Verdict(applies=False, allowed=True)
    if any(_rule_matches(r, request) for r in constraints.get("excludeResourceRules", [])):
        return Verdict(applies=False, allowed=True)
    env = celpy.Environment()
    raw = request.cel()
    activation: dict[str, Any] = {key: json_to_cel(value) for key, value in raw.items()}
    for condition in spec.get("matchConditions", []):
        result = _evaluate(env, condition["expression"], activation)
        if isinstance(result, CELEvalError):
            return Verdict(applies=True, allowed=False, messages=(f"matchCondition: {result}",))
        if not result:
            return Verdict(applies=False, allowed=True)
    variables: dict[str, Any] = {}
    for variable in [*spec.get("variables", []), None]:
        # Each variable sees the ones before it, as `variables.<name>`.
        activation["variables"] = celpy.celtypes.MapType(
            {celpy.celtypes.StringType(k): v for k, v in variables.items()}
        )
        if variable is not None:
            variables[variable["name"]] = _evaluate(env, variable["expression"], activation)
    messages = []
    for validation in spec.get("validations", []):
        result = _evaluate(env, validation["expression"], activation)
        if isinstance(result, CELEvalError):
            messages.append(f"evaluation failed (failurePolicy Fail): {result}")
        elif not result:
            text = validation.get("message", "")
            if "messageExpression" in validation:
                text = str(_evaluate(env, validation["messageExpression"], activation))
            messages.append(text)
    return Verdict(applies=True, allowed=not messages, messages=tuple(messages))
