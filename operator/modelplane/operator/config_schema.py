"""The operator config file's JSON Schema, kept in the chart's values.schema.json.

The chart writes its `operator.config` value out as the operator's config
file, so `helm install` should refuse there what `modelplane operator` would
refuse at start-up: a misspelt setting, a wrong type, a bad quantity. The
schema is generated from `OperatorConfig` (pydantic), with references
inlined (one self-contained subschema, whatever validator helm uses) and
titles and defaults dropped (values.yaml shows the defaults).

    python -m modelplane.operator.config_schema charts/modelplane/values.schema.json

rewrites that file's `operator.config` in place (`make chart-schema`); a test
fails when the committed copy is stale.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

from modelplane.operator.config import OperatorConfig

DESCRIPTION: Final = (
    "The operator's configuration file (operator.yaml): accelerator profiles, server images, "
    "probe thresholds, ... (`modelplane operator --config`). namespaces and healthPort are "
    "set by the chart from operator.watchNamespaces and operator.healthPort."
)
DROPPED: Final = ("title", "default")
SCHEMA_LISTS: Final = ("anyOf", "allOf", "oneOf")


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """`node` with every `$ref` into `defs` replaced by the definition, minus noise."""
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        name = node["$ref"].removeprefix("#/$defs/")
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        return _inline({**defs[name], **siblings}, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in DROPPED:
            continue
        if key == "properties":
            out[key] = {name: _inline(prop, defs) for name, prop in value.items()}
        elif key in SCHEMA_LISTS:
            out[key] = [_inline(item, defs) for item in value]
        elif key in ("items", "additionalProperties", "not"):
            out[key] = _inline(value, defs)
        else:
            out[key] = value
    return out


def operator_config_schema() -> dict[str, Any]:
    """OperatorConfig's camelCase JSON Schema, self-contained."""
    schema = OperatorConfig.model_json_schema(by_alias=True)
    defs = schema.pop("$defs", {})
    inlined: dict[str, Any] = _inline(schema, defs)
    inlined["description"] = DESCRIPTION
    return inlined


def with_operator_config_schema(values_schema: dict[str, Any]) -> dict[str, Any]:
    """The chart's values schema with `operator.config` replaced by the generated one."""
    updated: dict[str, Any] = json.loads(json.dumps(values_schema))
    updated["properties"]["operator"]["properties"]["config"] = operator_config_schema()
    return updated


def render_values_schema(text: str) -> str:
    """The values.schema.json text, formatted as committed."""
    return json.dumps(with_operator_config_schema(json.loads(text)), indent=2) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print(f"usage: python -m {__spec__.name} VALUES_SCHEMA_JSON", file=sys.stderr)
        return 2
    path = Path(args[0])
    path.write_text(render_values_schema(path.read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
