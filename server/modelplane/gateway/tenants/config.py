"""The tenants file: which API keys belong to which team, and each team's limits.

    tenants:
      team-a:
        keys: [sk-team-a-1, sk-team-a-2]   # or keyFile: team-a.keys (one key per line)
        weight: 2                          # share of a saturated model, relative to others
        requestsPerMinute: 600
        tokensPerMinute: 200000
        maxConcurrent: 32
        budget: {tokens: 50000000, period: month}   # day | week | month (UTC)
        models: [llama-8b]                 # optional allow-list

A `keyFile` is read relative to the tenants file's folder. Every problem is
reported at once, each naming the tenant and the field; a key may belong to
one tenant only (the message names both tenants, never the key). Tenant
names become metric label values, so they are short and plain, and their
number is bounded.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Final, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelplane.gateway.config_files import ConfigError, validation_problems

log = logging.getLogger("modelplane.gateway.tenants")

MAX_TENANTS: Final = 1000
MAX_KEYS_PER_TENANT: Final = 1000
MAX_FILE_BYTES: Final = 4 * 1024 * 1024
TENANT_NAME: Final = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")
# A key is a bearer token: printable ASCII without spaces, as the Authorization header carries it.
_KEY: Final = re.compile(r"^[\x21-\x7e]{8,512}$")


class Period(StrEnum):
    DAY = "day"
    WEEK = "week"  # from Monday 00:00 UTC
    MONTH = "month"  # from the 1st, 00:00 UTC


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class BudgetSpec(_Strict):
    tokens: Annotated[int, Field(gt=0)]
    period: Period


class TenantSpec(_Strict):
    keys: Annotated[list[str], Field(max_length=MAX_KEYS_PER_TENANT)] = []
    key_file: Path | None = Field(None, alias="keyFile")
    weight: Annotated[float, Field(gt=0, le=1000)] = 1.0
    requests_per_minute: Annotated[int, Field(gt=0)] | None = Field(None, alias="requestsPerMinute")
    tokens_per_minute: Annotated[int, Field(gt=0)] | None = Field(None, alias="tokensPerMinute")
    max_concurrent: Annotated[int, Field(gt=0)] | None = Field(None, alias="maxConcurrent")
    budget: BudgetSpec | None = None
    models: Annotated[list[str], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _keys_from_one_place(self) -> Self:
        if bool(self.keys) == (self.key_file is not None):
            raise ValueError("give either 'keys' (a list) or 'keyFile' (a file of keys)")
        bad = [i for i, k in enumerate(self.keys) if not _KEY.match(k)]
        if bad:
            raise ValueError(
                f"keys[{bad[0]}] is not a usable key (8 to 512 printable characters, no spaces)"
            )
        return self


class TenantsFile(_Strict):
    tenants: Annotated[dict[str, TenantSpec], Field(min_length=1, max_length=MAX_TENANTS)]

    @model_validator(mode="after")
    def _names(self) -> Self:
        for name in self.tenants:
            if not TENANT_NAME.match(name):
                raise ValueError(
                    f"tenant name {name[:70]!r} must be 1 to 63 lowercase letters, digits, "
                    "'.', '_' or '-', starting and ending with a letter or digit"
                )
        return self


@dataclass(frozen=True)
class Tenant:
    """One team as the gateway applies it (keys resolved, limits as given)."""

    name: str
    weight: float = 1.0
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None
    budget_tokens: int | None = None
    budget_period: Period | None = None
    models: frozenset[str] | None = None  # None: every model

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models


@dataclass(frozen=True)
class Tenants:
    """The tenants of one file, looked up by the digest of a presented key."""

    by_name: Mapping[str, Tenant]
    _by_key_digest: Mapping[bytes, str]
    digest: bytes = b""  # of everything read: a reload that finds the same changes nothing

    def for_key(self, key: str) -> Tenant | None:
        name = self._by_key_digest.get(key_digest(key))
        return None if name is None else self.by_name[name]

    @property
    def key_count(self) -> int:
        return len(self._by_key_digest)


def key_digest(key: str) -> bytes:
    """Keys are held and compared as digests: a lookup's time says nothing of the keys held."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def _read_text(path: Path, what: str) -> tuple[str, bytes]:
    """A small UTF-8 file's text and bytes; ConfigError starting with `what` otherwise."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{what}: cannot read {path}: {err.strerror}") from err
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{what}: {path} is larger than 4 MiB")
    try:
        return raw.decode("utf-8"), raw
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what}: {path} is not UTF-8 text") from err


def _read_key_file(path: Path, tenant: str) -> tuple[list[str], bytes]:
    text, raw = _read_text(path, f"tenants.{tenant}.keyFile")
    keys = [k for k in (line.strip() for line in text.splitlines()) if k and not k.startswith("#")]
    if not keys:
        raise ConfigError(f"tenants.{tenant}.keyFile: {path} holds no key")
    bad = next((i for i, k in enumerate(keys) if not _KEY.match(k)), None)
    if bad is not None:
        raise ConfigError(
            f"tenants.{tenant}.keyFile: key {bad + 1} in {path} is not a usable key "
            "(8 to 512 printable characters, no spaces)"
        )
    return keys, raw


def parse_tenants(text: str, folder: Path, source: str = "tenants file") -> Tenants:
    """The tenants in `text` (YAML), key files read from `folder`; names every problem."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{source} is not valid YAML: {err}") from err
    try:
        spec = TenantsFile.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"{source}: {validation_problems(err)}") from err
    digest = hashlib.sha256(text.encode("utf-8", "surrogateescape"))
    owners: dict[bytes, str] = {}
    problems: list[str] = []
    tenants: dict[str, Tenant] = {}
    for name, t in spec.tenants.items():
        keys = list(t.keys)
        if t.key_file is not None:
            try:
                keys, raw_keys = _read_key_file(folder / t.key_file, name)
            except ConfigError as err:
                problems.append(str(err))
                continue
            digest.update(raw_keys)
        for key in keys:
            d = key_digest(key)
            owner = owners.setdefault(d, name)
            if owner != name:
                problems.append(f"tenants.{name}.keys: a key of {name} is also a key of {owner}")
        tenants[name] = Tenant(
            name=name,
            weight=t.weight,
            requests_per_minute=t.requests_per_minute,
            tokens_per_minute=t.tokens_per_minute,
            max_concurrent=t.max_concurrent,
            budget_tokens=t.budget.tokens if t.budget else None,
            budget_period=t.budget.period if t.budget else None,
            models=frozenset(t.models) if t.models is not None else None,
        )
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(dict.fromkeys(problems)))
    return Tenants(by_name=tenants, _by_key_digest=owners, digest=digest.digest())


def read_tenants(path: Path) -> Tenants:
    """The tenants file at `path` (its key files beside it)."""
    text, _ = _read_text(path, "tenants file")
    return parse_tenants(text, path.parent, source=str(path))


def single_key_tenants(keys: tuple[str, ...]) -> Tenants:
    """The single-key-file mode: one implicit tenant per key, named by the key's position."""
    by_name: dict[str, Tenant] = {}
    owners: dict[bytes, str] = {}
    for i, key in enumerate(keys, start=1):
        name = f"key-{i}"
        by_name[name] = Tenant(name=name)
        owners[key_digest(key)] = name
    return Tenants(by_name=by_name, _by_key_digest=owners)


class TenantsFileWatch:
    """The tenants file, read at start (a bad file stops the gateway) and again every few
    seconds (a mounted Secret changes in place; http.key_store says why polling). A reload
    that finds a problem keeps the tenants read before and says so; `problem` holds it
    until a good file replaces it."""

    def __init__(self, path: Path, on_change: Callable[[Tenants], None] | None = None) -> None:
        self.path = path
        self.tenants = read_tenants(path)
        self.problem: str | None = None
        self.on_change = on_change

    def reload(self) -> bool:
        """Read the file again; True when the tenants changed."""
        try:
            tenants = read_tenants(self.path)
        except ConfigError as err:
            if str(err) != self.problem:
                log.warning("tenants file not reloaded, keeping the tenants read before: %s", err)
            self.problem = str(err)
            return False
        self.problem = None
        if tenants.digest == self.tenants.digest:
            return False
        self.tenants = tenants
        log.info(
            "tenants reloaded",
            extra={"path": str(self.path), "tenants": len(tenants.by_name)},
        )
        if self.on_change is not None:
            self.on_change(tenants)
        return True

    async def watch(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self.reload()
