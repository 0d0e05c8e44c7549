"""Generate the LLMDeployment CRD from the typed resource model.

`crds/llmdeployments.modelplane.io.yaml` is this module's output (`make crd`),
and a test fails when the committed file differs, so the schema the API
server enforces is always the pydantic model the operator parses with:
field names, types, enums, defaults, minimums, descriptions and the CEL rules
attached to each model. pydantic's JSON Schema is turned into a Kubernetes
*structural* schema: references inlined, `anyOf [X, null]` reduced to X,
exclusive bounds in OpenAPI v3.0 form, no `additionalProperties` beside
`properties`, and `default: {}` on nested objects so their own defaults apply.
"""

from __future__ import annotations

import sys
from typing import Any, Final

import yaml

from modelplane.api import contract
from modelplane.api.llmdeployment import (
    ADAPTER_NAME_RULE,
    NAME_RULE,
    LLMDeploymentSpec,
    LLMDeploymentStatus,
)

CRD_NAME: Final = f"{contract.PLURAL}.{contract.GROUP}"
HEADER: Final = (
    "# Generated from modelplane.api.llmdeployment by `make crd`; do not edit by hand.\n"
    "# Install: kubectl apply --server-side -f crds/\n"
)

PRINTER_COLUMNS: Final[list[dict[str, str]]] = [
    {"name": "Model", "type": "string", "jsonPath": ".status.model"},
    {"name": "Ready", "type": "string", "jsonPath": ".status.ready"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

_DROPPED_KEYS: Final = frozenset({"title", "additionalProperties", "$defs"})
# Schema keys in reading order (the rest, e.g. x-kubernetes-*, follow).
_KEY_ORDER: Final = (
    "type", "description", "enum", "default", "format", "pattern", "minLength", "maxLength",
    "minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum", "maxItems", "items",
    "required", "properties",
)  # fmt: skip


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    rank = {key: i for i, key in enumerate(_KEY_ORDER)}
    return dict(sorted(node.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline a `$ref` and unwrap `anyOf [X, null]`; keys beside them win over the target's."""
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**_resolve(target, defs), **node}
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot express {options} in a structural schema")
        node = {**_resolve(options[0], defs), **node}
    return node


def _structural(
    node: dict[str, Any], defs: dict[str, Any], *, with_defaults: bool
) -> dict[str, Any]:
    node = _resolve(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED_KEYS:
            continue
        if key == "default" and (value is None or not with_defaults):
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
            continue
        out[key] = value
    if "properties" in node:
        required = set(node.get("required", []))
        props: dict[str, Any] = {}
        for name, prop in node["properties"].items():
            converted = _structural(prop, defs, with_defaults=with_defaults)
            declared_default = "default" in _resolve(prop, defs)
            if (
                with_defaults
                and converted.get("type") == "object"
                and name not in required
                and not declared_default
            ):
                # Nested defaults only apply when the parent object exists.
                converted["default"] = {}
            props[name] = converted
        out["properties"] = props
    if "items" in node:
        out["items"] = _structural(node["items"], defs, with_defaults=with_defaults)
    return _ordered(out)


def _schema_of(model: type[Any], *, with_defaults: bool) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return _structural(schema, schema.get("$defs", {}), with_defaults=with_defaults)


def spec_schema() -> dict[str, Any]:
    return _schema_of(LLMDeploymentSpec, with_defaults=True)


def status_schema() -> dict[str, Any]:
    schema = _schema_of(LLMDeploymentStatus, with_defaults=False)
    conditions = schema["properties"]["conditions"]
    # One condition per type, merged by type (the Kubernetes convention).
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    # One entry per adapter, merged by name.
    adapters = schema["properties"]["adapters"]
    adapters["x-kubernetes-list-type"] = "map"
    adapters["x-kubernetes-list-map-keys"] = ["name"]
    return schema


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition manifest."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "labels": {contract.LABEL_PART_OF: contract.PART_OF},
        },
        "spec": {
            "group": contract.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": contract.KIND,
                "listKind": f"{contract.KIND}List",
                "plural": contract.PLURAL,
                "singular": contract.SINGULAR,
                "shortNames": [contract.SHORT_NAME],
                "categories": [contract.PART_OF],
            },
            "versions": [
                {
                    "name": contract.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A large language model served over the OpenAI API "
                            "by Modelplane on Kubernetes.",
                            "required": ["spec"],
                            "x-kubernetes-validations": [NAME_RULE, ADAPTER_NAME_RULE],
                            "properties": {
                                "apiVersion": {
                                    "type": "string",
                                    "description": "API version of this object.",
                                },
                                "kind": {"type": "string", "description": "LLMDeployment."},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def render_crd_yaml() -> str:
    return HEADER + yaml.safe_dump(build_crd(), sort_keys=False, width=100)


if __name__ == "__main__":
    sys.stdout.write(render_crd_yaml())
