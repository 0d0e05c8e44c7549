"""What the gateway reports of LoRA adapters whenever the routing table changes: how many
ready replicas hold each configured adapter, the adapters' token series from zero, and
adapter names refused because a model or another model's adapter has them (logged once
each time the set of conflicts changes, and counted)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from modelplane.gateway.metrics import GatewayMetrics
from modelplane.gateway.routing.adapters import AdapterConflict
from modelplane.gateway.routing.routes import ModelRoute, RoutingTable

log = logging.getLogger("modelplane.gateway.discovery")

TOKEN_KINDS = ("prompt", "completion")


def adapter_reports(
    table: RoutingTable, metrics: GatewayMetrics
) -> Callable[[Mapping[str, ModelRoute]], None]:
    """A routing table listener (the table's adapter index is current when it runs)."""
    reported: tuple[AdapterConflict, ...] = ()

    def update(routes: Mapping[str, ModelRoute]) -> None:
        nonlocal reported
        index = table.adapters
        metrics.adapter_replicas.clear()
        for adapter, model in sorted(index.models.items()):
            route = routes[model]
            holders = sum(route.holds(u, adapter) for u in route.upstreams)
            metrics.adapter_replicas.labels(model, adapter).set(holders)
            for kind in TOKEN_KINDS:  # rate() sees an adapter's first tokens
                metrics.adapter_tokens.labels(model, adapter, kind)
        if index.conflicts != reported:
            reported = index.conflicts
            metrics.adapter_name_conflicts.clear()
            for conflict in index.conflicts:
                log.warning(
                    "%s; its requests go to %r", conflict, conflict.winner,
                    extra={"adapter": conflict.adapter, "model": conflict.model,
                           "winner": conflict.winner},
                )  # fmt: skip
                metrics.adapter_name_conflicts.labels(conflict.adapter).inc()

    return update
