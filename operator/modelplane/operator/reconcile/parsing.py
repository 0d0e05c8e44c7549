"""The boundary: an LLMDeployment's raw spec becomes the typed spec, or readable problems.

Problems come from the schema (invalid: a spec that slipped past the CRD,
e.g. an older CRD installed, or a file given to `modelplane render`) or from
the fit check (valid, but not servable with this operator's accelerator
profiles). Either way each problem is one line naming the field as the
resource spells it, and every problem of a spec is reported at once: pydantic
stops at the first failing layer (a typo hides the cross-field rules and the
fit check), so the failing fields are set aside and the rest checked again
(`invalid_spec_problems`). An unknown field is named with the closest known
one (`did you mean maxModelLen?`).
"""

from __future__ import annotations

import copy
import difflib
import inspect
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, get_args

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from modelplane.api.llmdeployment import LLMDeploymentSpec, adapter_name_problem, name_problem
from modelplane.operator.config import OperatorConfig
from modelplane.operator.reconcile.fit import fit_problems

INVALID_SPEC: Final = "InvalidSpec"
DOES_NOT_FIT: Final = "DoesNotFit"

# Rounds of setting failing fields aside: each round can only uncover the rules of
# an enclosing object, and the spec nests four objects deep.
_MAX_ROUNDS: Final = 6
# The fields the fit check reads: once a value under one of these is set aside, its
# default would stand in for what the user wrote, and the fit check could blame it.
_FIT_INPUTS: Final = (("resources",), ("engine",), ("model", "cacheProfile"))
Location = tuple[str | int, ...]


@dataclass(frozen=True)
class ParsedSpec:
    spec: LLMDeploymentSpec | None
    problems: tuple[str, ...] = ()
    reason: str = ""

    @property
    def servable(self) -> bool:
        return self.spec is not None and not self.problems


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model a field holds, through Optional, Annotated and list."""
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _model_at(root: type[BaseModel], path: Sequence[str | int]) -> type[BaseModel] | None:
    """The model whose fields sit at `path` (resource spellings; list indexes skipped)."""
    model: type[BaseModel] | None = root
    for part in path:
        if isinstance(part, int):
            continue
        if model is None:
            return None
        field = next(
            (f for n, f in model.model_fields.items() if part in (f.alias, n)),
            None,
        )
        model = None if field is None else _model_in(field.annotation)
    return model


def known_fields(root: type[BaseModel], path: Sequence[str | int]) -> list[str]:
    """The field names the resource may spell at `path` (its aliases), in schema order."""
    model = _model_at(root, path)
    if model is None:
        return []
    return [f.alias or n for n, f in model.model_fields.items()]


def closest_field(typo: str, known: Iterable[str]) -> str | None:
    """The known field `typo` most likely meant: equal but for case, else the closest
    spelling (difflib), else None."""
    known = list(known)
    lowered = {k.lower(): k for k in known}
    if typo.lower() in lowered:
        return lowered[typo.lower()]
    matches = difflib.get_close_matches(typo, known, n=1, cutoff=0.6)
    return matches[0] if matches else None


def _unknown_field(loc: Location, root: type[BaseModel]) -> str:
    known = known_fields(root, loc[:-1])
    suggestion = closest_field(str(loc[-1]), known)
    if suggestion is not None:
        return f"unknown field; did you mean {suggestion}?"
    if known:
        return f"unknown field (the fields here: {', '.join(known)})"
    return "unknown field"


def describe_error(error: ErrorDetails, root: type[BaseModel] = LLMDeploymentSpec) -> str:
    """One line for one pydantic error: the field as the resource spells it, and what to do."""
    loc: Location = tuple(error["loc"])
    where = ".".join(["spec", *(str(p) for p in loc)])
    kind = error["type"]
    if kind == "extra_forbidden" and loc:
        return f"{where}: {_unknown_field(loc, root)}"
    if kind == "missing":
        return f"{where}: required, and not given"
    message = str(error["msg"]).removeprefix("Value error, ")
    if message.startswith("Input should "):
        # pydantic's "Input should be greater than 0": the field is named already.
        message = "must " + message.removeprefix("Input should ")
        given = error.get("input")
        if isinstance(given, int | float | str) and len(repr(given)) <= 80:
            message += f" (got {given!r})"
    return f"{where}: {message}"


def spec_problems(err: ValidationError) -> list[str]:
    return [describe_error(e) for e in err.errors()]


def _set_aside(raw: Any, loc: Location) -> bool:
    """Remove the value at `loc` from `raw` (in place); whether there was one."""
    if not loc:
        return False
    parent = raw
    for part in loc[:-1]:
        try:
            parent = parent[part]
        except (KeyError, IndexError, TypeError):
            return False
    last = loc[-1]
    if isinstance(parent, dict) and last in parent:
        del parent[last]
        return True
    if isinstance(parent, list) and isinstance(last, int) and 0 <= last < len(parent):
        del parent[last]
        return True
    return False


def _read_by_fit_check(loc: Location) -> bool:
    return any(loc[: len(prefix)] == prefix for prefix in _FIT_INPUTS)


def invalid_spec_problems(
    name: str, raw: Mapping[str, Any] | None, config: OperatorConfig, first: ValidationError
) -> list[str]:
    """Every problem of a spec that failed validation with `first`, not just its first layer.

    The failing values are set aside (their defaults apply) and the rest is
    validated again, which runs the rules of the objects around them; once
    the remainder validates, the fit check runs on it, unless a value it reads
    was set aside (it would judge the default, not what was written). The
    name is checked whatever else fails.
    """
    problems: list[str] = []
    candidate: Any = copy.deepcopy(dict(raw) if isinstance(raw, Mapping) else raw or {})
    fit_inputs_replaced = False
    error: ValidationError | None = first
    for _ in range(_MAX_ROUNDS):
        if error is None:
            break
        errors = error.errors()
        problems += [p for p in map(describe_error, errors) if p not in problems]
        # Deepest and last first, so removing a list item does not shift the others' indexes.
        removed = False
        for e in sorted(errors, key=lambda e: _sort_key(tuple(e["loc"])), reverse=True):
            loc: Location = tuple(e["loc"])
            if e["type"] == "missing":
                loc = loc[:-1]  # nothing to remove: the object lacking it is set aside
            if _set_aside(candidate, loc):
                removed = True
                fit_inputs_replaced |= e["type"] != "extra_forbidden" and _read_by_fit_check(loc)
        if not removed:
            break
        try:
            remainder = LLMDeploymentSpec.model_validate(candidate)
        except ValidationError as again:
            error = again
            continue
        if not fit_inputs_replaced:
            problems += [p for p in fit_problems(name, remainder, config) if p not in problems]
        break
    if (reason := name_problem(name)) is not None and reason not in problems:
        problems.append(reason)
    return problems


def _sort_key(loc: Location) -> tuple[tuple[int, int, str], ...]:
    """Orders locations whose parts mix names and list indexes."""
    return tuple((0, p, "") if isinstance(p, int) else (1, 0, p) for p in loc)


def parse_spec(name: str, raw: Mapping[str, Any] | None, config: OperatorConfig) -> ParsedSpec:
    try:
        spec = LLMDeploymentSpec.model_validate(raw or {})
    except ValidationError as err:
        return ParsedSpec(None, tuple(invalid_spec_problems(name, raw, config, err)), INVALID_SPEC)
    if (clash := adapter_name_problem(name, spec)) is not None:
        # The CRD's rule on the whole object (it needs metadata.name); checked here for
        # where no CRD validates (an older CRD, `modelplane render`).
        return ParsedSpec(spec, (f"spec.{clash}",), INVALID_SPEC)
    problems = fit_problems(name, spec, config)
    return ParsedSpec(spec, tuple(problems), DOES_NOT_FIT if problems else "")
