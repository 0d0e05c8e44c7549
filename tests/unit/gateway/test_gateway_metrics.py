"""The gateway's metric series exist from discovery on, so a first event shows in rate()."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from modelplane.gateway.discovery.static import StaticConfig, routes_from_static
from modelplane.gateway.options import GatewayOptions
from modelplane.gateway.runner import build_gateway

A, B = "http://10.0.0.1:8000", "http://10.0.0.2:8000"


async def test_discovered_models_and_replicas_count_retries_holds_and_ejections_from_zero() -> None:
    config = StaticConfig.model_validate({"models": {"m": {"upstreams": [A, B]}}})
    registry = CollectorRegistry()
    gateway = build_gateway(GatewayOptions(), (), registry, static_config=config)
    try:

        def value(name: str, **labels: str) -> float | None:
            return registry.get_sample_value(name, labels)

        assert value("modelplane_gateway_retries_total", model="m") is None
        gateway.table.replace(routes_from_static(config, ready=[A]))
        assert value("modelplane_gateway_retries_total", model="m") == 0
        assert value("modelplane_gateway_held_requests", model="m") == 0
        assert value("modelplane_gateway_ejections_total", model="m", upstream=A) == 0
        assert value("modelplane_gateway_ejections_total", model="m", upstream=B) is None
        gateway.table.replace(routes_from_static(config, ready=[A, B]))  # B turned ready
        assert value("modelplane_gateway_ejections_total", model="m", upstream=B) == 0
    finally:
        await gateway.pool.close()
