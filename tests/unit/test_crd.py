"""The LLMDeployment CRD: a valid CRD by the official schemas, one schema with the typed
model, and CEL rules that accept and refuse what the operator accepts and refuses.

The CEL rules are evaluated with cel-python (RE2 regexes, as the API server)
on objects defaulted the way the API server defaults them (from the schema's
`default`s), and the same raw specs go through the pydantic model: both must
agree on every case, valid and invalid.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pytest
import yaml
from celpy.adapter import json_to_cel
from celpy.evaluation import CELEvalError
from pydantic import ValidationError

from modelplane.api import contract
from modelplane.api.engine import EngineConfig
from modelplane.api.llmdeployment import LLMDeploymentSpec, adapter_name_problem, name_problem
from modelplane.operator.crd import CRD_NAME, build_crd, render_crd_yaml

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / f"{CRD_NAME}.yaml"
SAMPLES = sorted((REPO / "manifests" / "samples").glob("*.yaml"))
VERSIONS = ["1.30", kubernetes_validate.latest_version()]


def crd_from_file() -> dict[str, Any]:
    crd: dict[str, Any] = yaml.safe_load(CRD_FILE.read_text())
    return crd


def root_schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd_from_file()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_committed_crd_is_generated_from_the_model() -> None:
    assert CRD_FILE.read_text() == render_crd_yaml(), "run `make crd` and commit the result"


@pytest.mark.parametrize("version", VERSIONS)
def test_crd_is_valid_for_kubernetes(version: str) -> None:
    kubernetes_validate.validate(crd_from_file(), version, strict=True)


def test_crd_names_subresources_and_columns() -> None:
    spec = crd_from_file()["spec"]
    assert spec["group"] == contract.GROUP and spec["scope"] == "Namespaced"
    assert spec["names"]["shortNames"] == [contract.SHORT_NAME]
    (version,) = spec["versions"]
    assert version["name"] == contract.VERSION and version["served"] and version["storage"]
    assert version["subresources"]["scale"] == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.replicas",
        "labelSelectorPath": ".status.selector",
    }
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert list(columns) == ["Model", "Ready", "Phase", "Endpoint", "Age"]
    status_fields = root_schema()["properties"]["status"]["properties"]
    for path in columns.values():
        top, _, field = path.lstrip(".").partition(".")
        assert top == "metadata" or field in status_fields, path


def _nodes(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, node
    for name, child in node.get("properties", {}).items():
        yield from _nodes(child, f"{path}.{name}")
    if "items" in node:
        yield from _nodes(node["items"], f"{path}[]")


def test_every_field_is_typed_and_described() -> None:
    for path, node in _nodes(root_schema()["properties"]["spec"]):
        assert node.get("type"), f"{path} has no type (not a structural schema)"
        if not path.endswith("[]"):
            assert node.get("description"), f"{path} has no description"
    for path, node in _nodes(root_schema()["properties"]["status"]):
        assert node.get("type"), f"{path} has no type"


def test_engine_properties_are_engine_config_fields() -> None:
    engine = root_schema()["properties"]["spec"]["properties"]["engine"]["properties"]
    config_fields = {f.alias: f for f in EngineConfig.model_fields.values()}
    assert set(engine) == set(config_fields) | {"image"}
    for alias, field in config_fields.items():
        enum = getattr(field.annotation, "__members__", None)
        if enum is not None:
            assert engine[alias]["enum"] == [member.value for member in enum.values()], alias
        if field.description:
            assert engine[alias]["description"] == field.description


# --- CEL rules -------------------------------------------------------------


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting, as the API server does before validation."""
    if isinstance(value, dict) and "properties" in schema:
        out = dict(value)
        for name, prop in schema["properties"].items():
            if name not in out and "default" in prop:
                out[name] = copy.deepcopy(prop["default"])
            if name in out:
                out[name] = apply_defaults(prop, out[name])
        return out
    if isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], item) for item in value]
    return value


def cel_failures(obj: dict[str, Any]) -> list[str]:
    """Messages of the CEL rules `obj` (a whole LLMDeployment) breaks."""
    env = celpy.Environment()
    schema = root_schema()
    failures: list[str] = []

    def visit(node: dict[str, Any], value: Any) -> None:
        for rule in node.get("x-kubernetes-validations", []):
            program = env.program(env.compile(rule["rule"]))
            result = program.evaluate({"self": json_to_cel(value)})
            if isinstance(result, CELEvalError):
                raise result
            if not result:
                failures.append(rule["message"])
        if isinstance(value, dict):
            for name, child in node.get("properties", {}).items():
                if name in value:
                    visit(child, value[name])
        if isinstance(value, list) and "items" in node:  # each item's rules (adapters[])
            for item in value:
                visit(node["items"], item)

    visit(schema, apply_defaults(schema, obj))
    return failures


def resource(spec: dict[str, Any], name: str = "chat") -> dict[str, Any]:
    return {
        "apiVersion": contract.API_VERSION,
        "kind": contract.KIND,
        "metadata": {"name": name},
        "spec": spec,
    }


BASE = {"model": {"source": "hf://HuggingFaceTB/SmolLM2-135M-Instruct"}}

CASES = [
    # (case, spec changes, name, error message fragment or None)
    ("minimal", {}, "chat", None),
    ("pvc source", {"model": {"source": "pvc://models/llama"}}, "chat", None),
    ("s3 source", {"model": {"source": "s3://bucket/llama"}}, "chat", None),
    ("file source", {"model": {"source": "file:///models/smollm2"}}, "chat", None),
    ("http source", {"model": {"source": "http://example.com/m"}}, "chat", "hf://, pvc://"),
    ("no scheme", {"model": {"source": "models/llama"}}, "chat", "hf://, pvc://"),
    ("bad hf", {"model": {"source": "hf:/x"}}, "chat", "hf://, pvc://"),
    ("tp divides gpus", {"resources": {"gpus": 4}, "engine": {"tensorParallelSize": 2}},
     "chat", None),
    ("tp on cpu", {"engine": {"tensorParallelSize": 2}}, "chat", None),
    ("tp does not divide", {"resources": {"gpus": 3}, "engine": {"tensorParallelSize": 2}},
     "chat", "multiple of engine.tensorParallelSize"),
    ("autoscaling bounds", {"autoscaling": {"enabled": True, "minReplicas": 0,
                                            "maxReplicas": 3}}, "chat", None),
    ("min above max", {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "chat",
     "must not exceed autoscaling.maxReplicas"),
    ("min above default max", {"autoscaling": {"minReplicas": 6}}, "chat",
     "must not exceed autoscaling.maxReplicas"),
    ("maxSurge 0", {"rollout": {"maxSurge": 0, "maxUnavailable": 1}}, "chat", None),
    ("nothing can move", {"rollout": {"maxSurge": 0, "maxUnavailable": 0}}, "chat",
     "set maxUnavailable to 1"),
    ("maxSurge 0 alone", {"rollout": {"maxSurge": 0}}, "chat", "set maxUnavailable to 1"),
    ("canary steps", {"rollout": {"strategy": "Canary", "canary": {"steps": [5, 25, 100]}}},
     "chat", None),
    ("canary one step", {"rollout": {"canary": {"steps": [100]}}}, "chat", None),
    ("canary descending", {"rollout": {"canary": {"steps": [50, 10, 100]}}}, "chat",
     "strictly ascending"),
    ("canary repeated", {"rollout": {"canary": {"steps": [10, 10, 100]}}}, "chat",
     "strictly ascending"),
    ("canary short of 100", {"rollout": {"canary": {"steps": [10, 50]}}}, "chat",
     "must end at 100"),
    ("canary empty", {"rollout": {"canary": {"steps": []}}}, "chat", "must end at 100"),
    ("hf credentials", {"model": {"credentialsSecretRef": {"name": "hf-token"}}}, "chat", None),
    ("s3 credentials", {"model": {"source": "s3://b/m", "credentialsSecretRef": {"name": "s3"}}},
     "chat", None),
    ("pvc credentials", {"model": {"source": "pvc://c/m", "credentialsSecretRef": {"name": "x"}}},
     "chat", "applies to hf:// and s3:// sources only"),
    ("hf cache profile", {"model": {"cacheProfile": "shared"}}, "chat", None),
    ("s3 cache profile", {"model": {"source": "s3://b/m", "cacheProfile": "shared"}}, "chat",
     "applies to hf:// sources only"),
    ("identity", {"serviceAccountName": "reader", "imagePullSecrets": [{"name": "reg"}]},
     "chat", None),
    ("name upper case", {}, "Chat", "DNS label"),
    ("name digit first", {}, "1chat", "DNS label"),
    ("name too long", {}, "a" * 51, "at most 50"),
    ("name longest", {}, "a" * 50, None),
    ("adapters", {"adapters": [{"name": "sql", "source": "hf://x/sql"},
                               {"name": "fr", "source": "pvc://c/fr", "revision": "v2"}]},
     "chat", None),
    ("adapter source", {"adapters": [{"name": "sql", "source": "http://x/sql"}]}, "chat",
     "adapters[].source must start with hf://"),
    ("adapter repeated", {"adapters": [{"name": "sql", "source": "hf://x/a"},
                                       {"name": "sql", "source": "hf://x/b"}]},
     "chat", "adapters[].name must be unique"),
    ("adapter named as the resource", {"adapters": [{"name": "chat", "source": "hf://x/a"}]},
     "chat", "must differ from the base model's served name"),
    ("adapter named as servedName", {"model": {"servedName": "smol"},
                                     "adapters": [{"name": "smol", "source": "hf://x/a"}]},
     "chat", "must differ from the base model's served name"),
    ("adapter named as the resource, servedName set",
     {"model": {"servedName": "smol"}, "adapters": [{"name": "chat", "source": "hf://x/a"}]},
     "chat", None),
]  # fmt: skip


def _merge(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.mark.parametrize(("changes", "name", "error"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_cel_rules_and_the_model_agree(
    changes: dict[str, Any], name: str, error: str | None
) -> None:
    spec = _merge(BASE, changes)
    failures = cel_failures(resource(spec, name))
    try:
        parsed = LLMDeploymentSpec.model_validate(spec)
        model_error = name_problem(name) or adapter_name_problem(name, parsed)
    except ValidationError as err:
        model_error = str(err)
    if error is None:
        assert failures == [] and model_error is None
    else:
        assert len(failures) == 1 and error in failures[0], failures
        assert model_error is not None and error in model_error


# --- samples ---------------------------------------------------------------


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema refusing unknown fields, as `kubectl apply` (field validation Strict) does."""
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {k: strict(v) for k, v in out["properties"].items()}
        if out["properties"] and "metadata" not in out["properties"]:
            out["additionalProperties"] = False
    if "items" in out:
        out["items"] = strict(out["items"])
    return out


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.name for s in SAMPLES])
def test_samples_are_valid_llmdeployments(sample: Path) -> None:
    docs = [d for d in yaml.safe_load_all(sample.read_text()) if d]
    assert docs
    validator = jsonschema.Draft4Validator(strict(root_schema()))
    for doc in docs:
        validator.validate(doc)
        assert cel_failures(doc) == []
        LLMDeploymentSpec.model_validate(doc["spec"])


def test_the_schema_check_itself_refuses_unknown_and_wrong_fields() -> None:
    validator = jsonschema.Draft4Validator(strict(root_schema()))
    bad = [
        resource({**BASE, "replica": 2}),
        resource({**BASE, "engine": {"quantization": "int3"}}),
        resource({**BASE, "replicas": -1}),
        resource({"model": {}}),
    ]
    for doc in bad:
        assert list(validator.iter_errors(doc)), doc


def test_build_crd_is_deterministic() -> None:
    assert build_crd() == build_crd()
