"""LoRA adapters as the server takes them: names, `--adapter NAME=PATH`, their files,
and the engine settings derived from them.

An adapter is served as an OpenAI model of its own name beside the base
model. Its directory is in PEFT's format: `adapter_config.json` (whose `r`
is the adapter's rank) beside the weights. The engine reserves memory for
adapters up to one rank (`engine.maxLoraRank`) and for a number of them in
one batch (`engine.maxLoras`); left unset, both follow from the adapters
given on the command line. Everything here is pure except `read_adapter_rank`,
which reads one small JSON file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from modelplane.api.engine import LORA_RANKS, EngineConfig

# An adapter's name is an OpenAI `model` name, a metric label value and a URL path segment.
ADAPTER_NAME_PATTERN: Final = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$")
ADAPTER_CONFIG_FILE: Final = "adapter_config.json"
# An adapter_config.json is a few hundred bytes; a large one is not one.
MAX_ADAPTER_CONFIG_BYTES: Final = 1 << 20
# vLLM's own default largest rank, when no adapter says otherwise.
DEFAULT_LORA_RANK: Final = 16


class AdapterError(ValueError):
    """A one-line reason an adapter cannot be served."""


@dataclass(frozen=True)
class LocalAdapter:
    """An adapter directory on this machine, checked: its name, where it is, its rank."""

    name: str
    path: Path
    rank: int


def name_problem(name: str, base_model: str) -> str | None:
    """Why `name` cannot name an adapter of `base_model`, or None."""
    if not ADAPTER_NAME_PATTERN.match(name):
        return (
            f"adapter name {name[:80]!r} is not valid: 1 to 63 letters, digits, '.', '_' or "
            "'-', starting with a letter or digit"
        )
    if name == base_model:
        return f"adapter name {name!r} is the base model's served name; choose another"
    return None


def parse_adapter_arg(text: str) -> tuple[str, Path]:
    """`NAME=PATH` as given to `--adapter`."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise AdapterError(f"--adapter {text!r}: expected NAME=PATH (e.g. sql=/adapters/sql)")
    return name, Path(path)


def adapter_names_problem(names: Sequence[str], base_model: str) -> str | None:
    """Why these adapter names cannot be served together with `base_model`, or None."""
    seen: set[str] = set()
    for name in names:
        problem = name_problem(name, base_model)
        if problem is not None:
            return problem
        if name in seen:
            return f"adapter name {name!r} is given twice"
        seen.add(name)
    return None


def read_adapter_rank(path: Path) -> int:
    """The rank of the LoRA adapter in directory `path`, from its adapter_config.json."""
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise AdapterError(f"adapter path {path} {what}")
    config_file = path / ADAPTER_CONFIG_FILE
    try:
        if config_file.stat().st_size > MAX_ADAPTER_CONFIG_BYTES:
            raise AdapterError(f"{config_file} is too large to be an adapter config")
        text = config_file.read_bytes().decode("utf-8")
        config = json.loads(text)
    except FileNotFoundError as err:
        raise AdapterError(
            f"{path} holds no {ADAPTER_CONFIG_FILE}: not a LoRA adapter in PEFT's format"
        ) from err
    except OSError as err:
        raise AdapterError(f"cannot read {config_file}: {err.strerror}") from err
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise AdapterError(f"{config_file} is not valid JSON") from err
    if not isinstance(config, dict):
        raise AdapterError(f"{config_file} must hold a JSON object")
    peft_type = config.get("peft_type", "LORA")
    if not isinstance(peft_type, str) or peft_type.upper() != "LORA":
        raise AdapterError(f"{config_file}: peft_type is {peft_type!r}; only LORA is served")
    rank = config.get("r")
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise AdapterError(f"{config_file}: 'r' (the rank) must be a positive integer")
    if lora_rank_for(rank) is None:
        raise AdapterError(
            f"{config_file}: rank {rank} exceeds the largest the engine serves ({LORA_RANKS[-1]})"
        )
    return rank


def lora_rank_for(rank: int) -> int | None:
    """The smallest rank the engine accepts as its largest that holds `rank`; None: none."""
    return next((r for r in LORA_RANKS if r >= rank), None)


def read_local_adapters(given: Sequence[tuple[str, Path]], base_model: str) -> list[LocalAdapter]:
    """The command line's adapters, checked: names, then each directory's config."""
    problem = adapter_names_problem([name for name, _ in given], base_model)
    if problem is not None:
        raise AdapterError(problem)
    return [
        LocalAdapter(name, path.absolute(), read_adapter_rank(path.absolute()))
        for name, path in given
    ]


def with_lora_defaults(engine: EngineConfig, adapters: Sequence[LocalAdapter]) -> EngineConfig:
    """The engine settings with LoRA's unset ones derived from the adapters given.

    Without adapters the settings are as given (LoRA is on if either is set, and
    adapters then come at run time). With adapters, maxLoras defaults to their
    number and maxLoraRank to the largest of their ranks, rounded up."""
    if not adapters:
        return engine
    largest = max(a.rank for a in adapters)
    rank = engine.max_lora_rank or lora_rank_for(largest) or LORA_RANKS[-1]
    if rank < largest:
        raise AdapterError(
            f"engine maxLoraRank {rank} is below the rank {largest} of adapter "
            f"{next(a.name for a in adapters if a.rank == largest)!r}; raise maxLoraRank"
        )
    return engine.model_copy(
        update={"max_loras": engine.max_loras or len(adapters), "max_lora_rank": rank}
    )


def engine_lora_rank(engine: EngineConfig) -> int | None:
    """The largest adapter rank a running engine with these settings accepts; None: no LoRA."""
    if not engine.serves_lora:
        return None
    return engine.max_lora_rank or DEFAULT_LORA_RANK
