"""The boundary: an LLMDeployment's raw spec becomes the typed spec, or readable problems.

Problems come from the schema (invalid: a spec that slipped past the CRD,
e.g. an older CRD installed) or from the fit check (valid, but not servable
with this operator's accelerator profiles). Either way each problem is one
line naming the field as the resource spells it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from pydantic import ValidationError

from modelplane.api.llmdeployment import LLMDeploymentSpec
from modelplane.operator.config import OperatorConfig
from modelplane.operator.reconcile.fit import fit_problems

INVALID_SPEC: Final = "InvalidSpec"
DOES_NOT_FIT: Final = "DoesNotFit"


@dataclass(frozen=True)
class ParsedSpec:
    spec: LLMDeploymentSpec | None
    problems: tuple[str, ...] = ()
    reason: str = ""

    @property
    def servable(self) -> bool:
        return self.spec is not None and not self.problems


def spec_problems(err: ValidationError) -> list[str]:
    lines = []
    for e in err.errors():
        where = ".".join(["spec", *(str(p) for p in e["loc"])])
        message = str(e["msg"]).removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    return lines


def parse_spec(name: str, raw: Mapping[str, Any] | None, config: OperatorConfig) -> ParsedSpec:
    try:
        spec = LLMDeploymentSpec.model_validate(raw or {})
    except ValidationError as err:
        return ParsedSpec(None, tuple(spec_problems(err)), INVALID_SPEC)
    problems = fit_problems(name, spec, config)
    return ParsedSpec(spec, tuple(problems), DOES_NOT_FIT if problems else "")
