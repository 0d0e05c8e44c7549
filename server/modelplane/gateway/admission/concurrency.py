"""Caps on requests the gateway has taken in: in flight (being read, held or proxied)
overall, per identity and per model, and held for a model with no ready replica
overall and per model.

Every request in the gateway costs a socket, a task and, until the replica has
it, its body; a held request keeps its body for as long as the model takes to
start. Without caps one busy tenant, or one model scaled to zero meeting a
burst, takes everything. A request over a cap is answered at once: 429 when
the identity's own cap is the one hit (it is that client's load), 503 when the
gateway or the model is full (anybody's retry may succeed), both with
`Retry-After` in the OpenAI envelope.

The counts live in dictionaries whose entries are removed at zero, so their
size is bounded by the requests in flight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

# A request refused for load can be retried almost at once: capacity frees as
# requests finish. Held requests wait for a model to start, which takes longer.
BUSY_RETRY_AFTER_S: Final = 1
HELD_RETRY_AFTER_S: Final = 5


@dataclass(frozen=True)
class ConcurrencyCaps:
    in_flight: int = 1024
    in_flight_per_model: int = 512
    in_flight_per_identity: int = 256
    held: int = 256
    held_per_model: int = 128


@dataclass(frozen=True)
class Refusal:
    status: int
    retry_after_s: int
    limit: str  # the metric label: which cap was hit
    message: str


def _inc(counts: dict[str, int], key: str) -> None:
    counts[key] = counts.get(key, 0) + 1


def _dec(counts: dict[str, int], key: str) -> None:
    left = counts[key] - 1
    if left:
        counts[key] = left
    else:
        del counts[key]


@dataclass
class ConcurrencyGate:
    caps: ConcurrencyCaps = field(default_factory=ConcurrencyCaps)
    in_flight: int = 0
    held: int = 0
    _per_identity: dict[str, int] = field(default_factory=dict)
    _per_model: dict[str, int] = field(default_factory=dict)
    _held_per_model: dict[str, int] = field(default_factory=dict)

    def enter(self, identity: str) -> Refusal | None:
        """Take a place for a request before its body is read; `leave` gives it back."""
        caps = self.caps
        if self.in_flight >= caps.in_flight:
            return Refusal(
                503, BUSY_RETRY_AFTER_S, "in flight",
                f"the gateway has {caps.in_flight} requests in flight, its limit; retry shortly",
            )  # fmt: skip
        if self._per_identity.get(identity, 0) >= caps.in_flight_per_identity:
            return Refusal(
                429, BUSY_RETRY_AFTER_S, "in flight per key",
                f"this API key (or client address) has {caps.in_flight_per_identity} requests "
                "in flight, its limit; wait for one to finish",
            )  # fmt: skip
        self.in_flight += 1
        _inc(self._per_identity, identity)
        return None

    def leave(self, identity: str) -> None:
        self.in_flight -= 1
        _dec(self._per_identity, identity)

    def enter_model(self, model: str) -> Refusal | None:
        """Once the model is known; `leave_model` gives the place back."""
        cap = self.caps.in_flight_per_model
        if self._per_model.get(model, 0) >= cap:
            return Refusal(
                503, BUSY_RETRY_AFTER_S, "in flight per model",
                f"model {model!r} has {cap} requests in flight at this gateway, its limit; "
                "retry shortly",
            )  # fmt: skip
        _inc(self._per_model, model)
        return None

    def leave_model(self, model: str) -> None:
        _dec(self._per_model, model)

    def hold(self, model: str) -> Refusal | None:
        """Before holding a request for a model with no ready replica; `release` after."""
        caps = self.caps
        if self.held >= caps.held:
            return Refusal(
                503, HELD_RETRY_AFTER_S, "held",
                f"the gateway holds {caps.held} requests for models that are starting, its "
                "limit; retry once the model is up",
            )  # fmt: skip
        if self._held_per_model.get(model, 0) >= caps.held_per_model:
            return Refusal(
                503, HELD_RETRY_AFTER_S, "held per model",
                f"the gateway holds {caps.held_per_model} requests for model {model!r} while "
                "it starts, its limit; retry once the model is up",
            )  # fmt: skip
        self.held += 1
        _inc(self._held_per_model, model)
        return None

    def release(self, model: str) -> None:
        self.held -= 1
        _dec(self._held_per_model, model)
