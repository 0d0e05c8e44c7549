"""LoRA adapters at the gateway: which model serves an adapter's name, and the key its
requests are balanced by.

A model's configuration names its adapters (the model Service's
`modelplane.io/adapters` annotation, or `adapters:` in the static file); each
replica's `/ready` answer lists the adapters it has loaded now. A request whose
`model` is an adapter's name goes to the base model's replicas that hold the
adapter (`ModelRoute.for_adapter`), never to one that does not (it would
answer 404), and is held while none does, like a model scaled to zero.

Names are bounded and checked here, because they become metric labels and map
keys: at most `MAX_ADAPTERS` per model, each at most `MAX_NAME_CHARS` of a
plain character set. When an adapter's name is also a model's name the model
wins; when two models configure one adapter name, the model whose name sorts
first keeps it. Both are reported as conflicts (`index_adapters`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

MAX_NAME_CHARS: Final = 128
MAX_ADAPTERS: Final = 256  # per model (an LLMDeployment allows fewer)
# What an LLMDeployment allows (`api.llmdeployment.ADAPTER_NAME_PATTERN`): letters, digits,
# '.', '_' and '-', starting and ending with a letter or digit. No comma (the annotation's
# separator), no space, nothing that needs quoting in a label, a log or a URL path.
NAME: Final = re.compile(r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?")
ADAPTER_KEY_PREFIX: Final = b"lora-adapter\x00"


@dataclass(frozen=True)
class AdapterNames:
    """The usable names of a list, in order, and what was wrong with the rest."""

    names: tuple[str, ...]
    problems: tuple[str, ...] = ()


def adapter_names(raw: Iterable[object]) -> AdapterNames:
    """Check a list of adapter names: each a string of the allowed characters and length,
    each once, at most `MAX_ADAPTERS`. Bad ones are left out and described."""
    names: list[str] = []
    problems: list[str] = []
    seen: set[str] = set()
    for item in raw:
        if not isinstance(item, str):
            problems.append(f"adapter name {item!r:.60} is not a string")
        elif len(item) > MAX_NAME_CHARS:
            problems.append(f"adapter name {item[:40]!r}... is over {MAX_NAME_CHARS} characters")
        elif NAME.fullmatch(item) is None:
            problems.append(
                f"adapter name {item!r} must hold only letters, digits, '.', '_' and '-', "
                "and start and end with a letter or digit"
            )
        elif item in seen:
            problems.append(f"adapter name {item!r} is listed twice")
        elif len(names) == MAX_ADAPTERS:
            problems.append(f"more than {MAX_ADAPTERS} adapters: the rest are left out")
            break
        else:
            seen.add(item)
            names.append(item)
    return AdapterNames(tuple(names), tuple(problems))


def annotation_adapter_names(value: object) -> AdapterNames:
    """The names of a comma-separated annotation value (spaces around names allowed)."""
    if value is None or value == "":
        return AdapterNames(())
    if not isinstance(value, str):
        return AdapterNames((), (f"the adapters annotation is not a string: {value!r:.60}",))
    return adapter_names(part.strip() for part in value.split(",") if part.strip())


def ready_adapters(state: object) -> frozenset[str]:
    """The adapters a replica's parsed `/ready` answer says it has loaded (`adapters`),
    valid names only; none when it lists none (a server without adapters, or an older one)."""
    listed = state.get("adapters") if isinstance(state, dict) else None
    if not isinstance(listed, list):
        return frozenset()
    return frozenset(adapter_names(listed).names)


@dataclass(frozen=True)
class AdapterConflict:
    """A model's adapter whose name is served by something else."""

    adapter: str
    model: str  # the model that configured it, and does not get the name
    winner: str  # the model that serves the name (as its own name, or as its adapter's)

    def __str__(self) -> str:
        if self.adapter == self.winner:
            return f"adapter {self.adapter!r} of model {self.model!r}: a model has that name"
        return (
            f"adapter {self.adapter!r} of model {self.model!r}: "
            f"model {self.winner!r} configures it too (first by name)"
        )


@dataclass(frozen=True)
class AdapterIndex:
    models: Mapping[str, str]  # adapter name -> the model that serves it
    conflicts: tuple[AdapterConflict, ...] = ()


def index_adapters(configured: Mapping[str, Iterable[str]]) -> AdapterIndex:
    """Which model serves each adapter name, from each model's configured adapters.

    A model's own name beats an adapter's (a client asking for a model by its name must
    get that model); between models, the first by name keeps an adapter name. The
    outcome does not depend on the order discovery found things in, so every gateway
    replica decides alike.
    """
    models: dict[str, str] = {}
    conflicts: list[AdapterConflict] = []
    for model in sorted(configured):
        for adapter in sorted(set(configured[model])):
            if adapter in configured:
                conflicts.append(AdapterConflict(adapter, model, adapter))
            elif adapter in models:
                conflicts.append(AdapterConflict(adapter, model, models[adapter]))
            else:
                models[adapter] = model
    return AdapterIndex(models, tuple(conflicts))


def adapter_key(adapter: str) -> bytes:
    """What an adapter's requests are hashed by when the model has no prefix routing: all
    of them to the same holder while its load stays within the bound, so each replica
    batches few distinct adapters (an engine runs a bounded number of adapters at once)."""
    return ADAPTER_KEY_PREFIX + adapter.encode()
