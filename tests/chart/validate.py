"""Validate rendered objects the way the API server would, without a cluster.

Kubernetes' own kinds: kubernetes-validate, with the official OpenAPI schemas
of each Kubernetes version, in strict mode (unknown fields are errors).

Prometheus Operator kinds (PodMonitor, ServiceMonitor, PrometheusRule), which
kubernetes-validate has no schema for: the typed models of
cloudcoil-models-prometheus-operator, generated from the prometheus-operator
CRDs' OpenAPI schemas (v0.80). They check types, enums and patterns as the
CRD does (durations, relabel actions, ...). Like the API server, the models
silently drop fields they do not know, so strictness is added here: any field
of the input missing from what the model kept is reported as unknown.

KEDA kinds (ScaledObject, TriggerAuthentication), for the examples in
manifests/autoscaling/: the typed models of cloudcoil-models-keda, generated
from KEDA's CRDs (v2.16), made strict in the same way.

Kinds the chart's own CRDs define (LLMDeployment, kopf's peering objects):
the CRD's openAPIV3Schema (read from the repository's crds/, which the
chart's copies equal) with jsonschema, made strict the way the API server's
field validation is (unknown fields are errors, except under
x-kubernetes-preserve-unknown-fields).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from cloudcoil.models.keda import v1alpha1 as keda_v1alpha1
from cloudcoil.models.prometheus_operator import v1 as monitoring_v1
from pydantic import BaseModel, ValidationError

MONITORING_API = "monitoring.coreos.com/v1"
MONITORING_MODELS: dict[str, type[BaseModel]] = {
    "PodMonitor": monitoring_v1.PodMonitor,
    "ServiceMonitor": monitoring_v1.ServiceMonitor,
    "PrometheusRule": monitoring_v1.PrometheusRule,
}
KEDA_API = "keda.sh/v1alpha1"
KEDA_MODELS: dict[str, type[BaseModel]] = {
    "ScaledObject": keda_v1alpha1.ScaledObject,
    "TriggerAuthentication": keda_v1alpha1.TriggerAuthentication,
}


CRDS = Path(__file__).resolve().parents[2] / "crds"
# What the API server accepts at the root of every custom resource.
OBJECT_ROOT = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {}}


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A structural schema refusing unknown fields, as strict field validation does.

    OpenAPI v3.0 (what CRDs use) writes an exclusive bound as `minimum` plus
    `exclusiveMinimum: true`; JSON Schema draft 7 wants the bound itself in
    `exclusiveMinimum`. Read as draft 7, `true` would be the bound 1.
    """
    out = dict(schema)
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if out.get(exclusive) is True and bound in out:
            out[exclusive] = out.pop(bound)
        elif out.get(exclusive) is False:
            del out[exclusive]
    if "properties" in out:
        out["properties"] = {k: strict_schema(v) for k, v in out["properties"].items()}
        if not out.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
    if "items" in out:
        out["items"] = strict_schema(out["items"])
    return out


@cache
def custom_resource_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> strict root schema, for every CRD the chart installs."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(CRDS.glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd:
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                root = dict(version["schema"]["openAPIV3Schema"])
                root["properties"] = {**OBJECT_ROOT, **root.get("properties", {})}
                api_version = f"{spec['group']}/{version['name']}"
                schemas[(api_version, spec["names"]["kind"])] = strict_schema(root)
    return schemas


def validate_custom_resource(doc: dict[str, Any]) -> list[str] | None:
    """Errors for an object of a chart CRD's kind; None when no chart CRD defines it."""
    schema = custom_resource_schemas().get((doc["apiVersion"], doc["kind"]))
    if schema is None:
        return None
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in validator.iter_errors(doc)
    ]


def unknown_fields(given: Any, kept: Any, path: str = "") -> list[str]:
    """Paths present in `given` but dropped from `kept`."""
    if isinstance(given, dict) and isinstance(kept, dict):
        found = []
        for key, value in given.items():
            where = f"{path}.{key}" if path else key
            if key not in kept:
                found.append(where)
            else:
                found += unknown_fields(value, kept[key], where)
        return found
    if isinstance(given, list) and isinstance(kept, list):
        return [
            p for i, (g, k) in enumerate(zip(given, kept, strict=True))
            for p in unknown_fields(g, k, f"{path}[{i}]")
        ]  # fmt: skip
    return []


def validate_monitoring(doc: dict[str, Any]) -> list[str]:
    model = MONITORING_MODELS.get(doc["kind"])
    if model is None or doc["apiVersion"] != MONITORING_API:
        return [f"no schema for {doc['apiVersion']} {doc['kind']}"]
    return validate_typed(doc, model)


def validate_keda(doc: dict[str, Any]) -> list[str]:
    model = KEDA_MODELS.get(doc["kind"])
    if model is None or doc["apiVersion"] != KEDA_API:
        return [f"no schema for {doc['apiVersion']} {doc['kind']}"]
    return validate_typed(doc, model)


def validate_typed(doc: dict[str, Any], model: type[BaseModel]) -> list[str]:
    """Errors of `doc` against a model generated from a CRD, unknown fields included."""
    try:
        parsed = model.model_validate(doc)
    except ValidationError as e:
        return [str(e)]
    kept = parsed.model_dump(by_alias=True, exclude_unset=True, mode="json")
    return [f"unknown field {p}" for p in unknown_fields(doc, kept)]


def validate(doc: dict[str, Any], kube_version: str) -> list[str]:
    """Errors for one object; empty when valid."""
    if doc["apiVersion"].startswith("monitoring.coreos.com/"):
        return validate_monitoring(doc)
    if doc["apiVersion"].startswith("keda.sh/"):
        return validate_keda(doc)
    custom = validate_custom_resource(doc)
    if custom is not None:
        return custom
    try:
        kubernetes_validate.validate(doc, kube_version, strict=True)
    except kubernetes_validate.ValidationError as e:
        where = ".".join(str(p) for p in e.path)
        return [f"{where}: {e.message}"]
    except kubernetes_validate.SchemaNotFoundError as e:
        return [str(e)]
    return []
