"""`modelplane gateway` options: one typed model, filled from command-line flags."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from modelplane.api import contract
from modelplane.gateway.config_files import validation_problems
from modelplane.gateway.routing.routes import Routing

PositiveSeconds = Annotated[float, Field(gt=0)]
Count = Annotated[int, Field(ge=1)]
# --redis-url's default: a URL with a password belongs in a Secret, not on the command line.
REDIS_URL_ENV = "MODELPLANE_REDIS_URL"


class GatewayOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = contract.GATEWAY_PORT
    metrics_host: str | None = None  # None: the same address as `host`
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = contract.GATEWAY_METRICS_PORT
    discovery: Literal["static", "kubernetes"] = "static"
    config: Path | None = None
    namespaces: tuple[str, ...] = ()
    default_routing: Routing = Routing.LEAST_LOAD
    prefix_load_factor: Annotated[float, Field(ge=1.0)] = 1.25
    api_key_file: Path | None = None
    key_reload_interval: PositiveSeconds = 5.0
    requests_per_minute: Annotated[int, Field(gt=0)] | None = None
    tokens_per_minute: Annotated[int, Field(gt=0)] | None = None
    hold_timeout: Annotated[float, Field(ge=0)] = 120.0
    connect_timeout: PositiveSeconds = 3.0
    read_timeout: PositiveSeconds = 600.0
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 3
    retry_budget: Annotated[float, Field(ge=0, le=1)] = 0.2
    eject_after: Annotated[int, Field(ge=1)] = 3
    ejection_time: PositiveSeconds = 5.0
    health_interval: PositiveSeconds = 1.0
    model_key_refresh: PositiveSeconds = 30.0
    demand_interval: PositiveSeconds = 2.0
    max_request_bytes: Annotated[int, Field(ge=1024)] = 8 * 1024 * 1024
    header_timeout: PositiveSeconds = 10.0
    body_timeout: PositiveSeconds = 30.0
    max_connections: Count = 2048
    max_in_flight: Count = 1024
    max_in_flight_per_model: Count = 512
    max_in_flight_per_key: Count = 256
    max_held: Count = 256
    max_held_per_model: Count = 128
    max_buffered_bytes: Annotated[int, Field(ge=1024 * 1024)] = 512 * 1024 * 1024
    max_upstream_connections: Count = 1024
    drain_timeout: Annotated[float, Field(ge=0)] = 30.0
    tenants: Path | None = None
    redis_url: str | None = Field(None, repr=False)  # may hold a password
    redis_failure: Literal["open", "closed"] = "open"
    replica_concurrency: Annotated[int, Field(ge=1, le=4096)] | None = None
    max_queued_per_tenant: Count = 256
    queue_anticipation: Annotated[float, Field(ge=0, le=1)] = 0.02
    otlp_traces_endpoint: str | None = None
    log_format: Literal["json", "text"] = "json"
    access_log: bool = False

    @model_validator(mode="after")
    def _keys_from_one_place(self) -> GatewayOptions:
        if self.tenants is not None and self.api_key_file is not None:
            raise ValueError(
                "give tenants or api_key_file, not both: the tenants file holds every key"
            )
        if self.redis_url is not None and self.tenants is None:
            raise ValueError(
                f"redis_url (--redis-url or {REDIS_URL_ENV}) shares tenants' limits: "
                "it needs tenants"
            )
        if self.redis_url is not None and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError("redis_url must start with redis://, rediss:// or unix://")
        return self

    @model_validator(mode="after")
    def _ports_differ(self) -> GatewayOptions:
        if self.port == self.metrics_port and self.port != 0:
            raise ValueError(
                f"port and metrics_port are both {self.port}: /metrics needs a port of its own"
            )
        return self

    @property
    def metrics_address(self) -> str:
        return self.host if self.metrics_host is None else self.metrics_host


class OptionsError(ValueError):
    """A one-line reason the options cannot be used."""


def add_gateway_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags default to None so the model's defaults stay in one place."""
    d = parser.add_argument_group("discovery")
    d.add_argument(
        "--discovery",
        choices=("static", "kubernetes"),
        help="Where replicas come from: a YAML file (static, the default) or the "
        "Services and EndpointSlices the operator creates (kubernetes).",
    )
    d.add_argument(
        "--config",
        type=Path,
        help="Static discovery file: models, their replica URLs, routing and weights.",
    )
    d.add_argument(
        "--namespace",
        dest="namespaces",
        action="append",
        metavar="NS",
        help="Kubernetes namespace to watch (repeatable; default: all namespaces).",
    )
    d.add_argument(
        "--default-routing",
        choices=[r.value for r in Routing],
        help="Balancing for models that do not choose one (least-load).",
    )
    d.add_argument(
        "--prefix-load-factor",
        type=float,
        help="Prefix routing: how far above the mean load a conversation's replica may go "
        "before its requests spill to the next one (1.25).",
    )
    d.add_argument(
        "--health-interval", type=float, help="Seconds between /ready polls (static; 1)."
    )
    d.add_argument(
        "--model-key-refresh",
        type=float,
        help="Seconds between reads of each model's key Secret (kubernetes; 30): a rotated "
        "or revoked key takes effect within it.",
    )
    s = parser.add_argument_group("serving")
    s.add_argument("--host", help="Address to bind (default 127.0.0.1; 0.0.0.0 in a pod).")
    s.add_argument("--port", type=int, help=f"Port to bind (default {contract.GATEWAY_PORT}).")
    s.add_argument(
        "--api-key-file",
        type=Path,
        help="File with API keys, one per line; keys also come from MODELPLANE_API_KEYS. "
        "With no key configured the API is open. The file is re-read every "
        "--key-reload-interval seconds: keys added or removed take effect without a restart.",
    )
    s.add_argument(
        "--key-reload-interval", type=float, help="Seconds between reads of the key file (5)."
    )
    s.add_argument(
        "--requests-per-minute",
        type=int,
        help="Request limit per key, or per client address with no keys (none).",
    )
    s.add_argument(
        "--tokens-per-minute",
        type=int,
        help="Token limit per key, or per client address with no keys (none); each request "
        "reserves its max_tokens (512 if absent) plus its prompt's estimate.",
    )
    s.add_argument(
        "--hold-timeout",
        type=float,
        help="Seconds a request waits for a model with no ready replica (120).",
    )
    s.add_argument("--max-request-bytes", type=int, help="Largest accepted request body (8 MiB).")
    c = parser.add_argument_group("connections and concurrency")
    c.add_argument(
        "--header-timeout",
        type=float,
        help="Seconds a client has to send a request's head; then 408 and close (10).",
    )
    c.add_argument(
        "--body-timeout",
        type=float,
        help="Seconds a client has to send a whole request body; then 408 and close (30).",
    )
    c.add_argument(
        "--max-connections",
        type=int,
        help="Open client connections, idle ones included; past it 503 (2048).",
    )
    c.add_argument(
        "--max-in-flight",
        type=int,
        help="Requests read, held or proxied at once; past it 503 (1024).",
    )
    c.add_argument(
        "--max-in-flight-per-model", type=int, help="The same, per model; past it 503 (512)."
    )
    c.add_argument(
        "--max-in-flight-per-key",
        type=int,
        help="The same, per key (per client address with no keys); past it 429 (256).",
    )
    c.add_argument(
        "--max-held",
        type=int,
        help="Requests held for models with no ready replica; past it 503 (256).",
    )
    c.add_argument("--max-held-per-model", type=int, help="The same, per model (128).")
    c.add_argument(
        "--max-buffered-bytes",
        type=int,
        help="Bytes of request bodies in memory at once (read, held, not yet sent); "
        "past it 503 (512 MiB).",
    )
    c.add_argument(
        "--max-upstream-connections",
        type=int,
        help="Connections to replicas, all together (1024).",
    )
    s.add_argument(
        "--drain-timeout",
        type=float,
        help="Seconds in-flight requests may take to finish after SIGTERM (30).",
    )
    u = parser.add_argument_group("upstreams")
    u.add_argument("--connect-timeout", type=float, help="Seconds to connect to a replica (3).")
    u.add_argument(
        "--read-timeout",
        type=float,
        help="Seconds a replica may stay silent, before or during a response (600).",
    )
    u.add_argument("--max-attempts", type=int, help="Tries per request across replicas (3).")
    u.add_argument(
        "--retry-budget", type=float, help="Retries allowed as a share of requests (0.2)."
    )
    u.add_argument("--eject-after", type=int, help="Consecutive failures that eject a replica (3).")
    u.add_argument("--ejection-time", type=float, help="First ejection's cool-down in seconds (5).")
    u.add_argument(
        "--demand-interval",
        type=float,
        help="Least seconds between scale-from-zero signals per model (2).",
    )
    t = parser.add_argument_group("tenants")
    t.add_argument(
        "--tenants",
        type=Path,
        metavar="FILE",
        help="Tenants file: each team's keys, weight, limits, budget and models (instead of "
        "--api-key-file). Re-read every --key-reload-interval seconds; a bad reload keeps "
        "the tenants read before.",
    )
    t.add_argument(
        "--redis-url",
        metavar="URL",
        help="Redis shared by the gateway replicas, so a tenant's limits and budget hold "
        f"across them and survive restarts (redis://host:6379/0; default: ${REDIS_URL_ENV} "
        "if set, else this process). A URL with a password is better given in "
        f"{REDIS_URL_ENV} than here, where `ps` shows it.",
    )
    t.add_argument(
        "--redis-failure",
        choices=("open", "closed"),
        help="With Redis unreachable: count in this replica's memory until it is back "
        "(open, the default) or answer 503 (closed).",
    )
    t.add_argument(
        "--replica-concurrency",
        type=int,
        metavar="N",
        help="Requests one replica runs at once, for models whose discovery does not say "
        "(--max-num-seqs in engine.extraArgs, or the static file's concurrency); past "
        "replicas x N the "
        "gateway queues requests and serves them by tenant weight (default: no queue).",
    )
    t.add_argument(
        "--max-queued-per-tenant",
        type=int,
        metavar="N",
        help="Requests one tenant may have waiting for a saturated model (256); one more is a 429.",
    )
    t.add_argument(
        "--queue-anticipation",
        type=float,
        metavar="SECONDS",
        help="A saturated model's slot freed by a tenant is kept this long for that "
        "tenant's next request when the queue would serve it first anyway (0.02; 0: off): "
        "a client sending one request at a time then does not wait a whole slot turnover.",
    )
    o = parser.add_argument_group("observability")
    o.add_argument(
        "--metrics-port",
        type=int,
        help=f"Port of GET /metrics ({contract.GATEWAY_METRICS_PORT}); never the API's port: "
        "the series name replicas by address.",
    )
    o.add_argument("--metrics-host", help="Address the metrics port binds (default: --host).")
    o.add_argument("--otlp-traces-endpoint", help="OTLP/HTTP collector URL for request spans.")
    o.add_argument("--log-format", choices=("json", "text"), help="Log line format (json).")
    o.add_argument(
        "--access-log",
        action="store_true",
        default=None,
        help="Log every request (failures and retries are always logged).",
    )


_FIELDS = tuple(GatewayOptions.model_fields)


def options_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None, **overrides: Any
) -> GatewayOptions:
    """The flags given, over the environment (`environ`, default os.environ), over defaults."""
    given = {name: getattr(args, name) for name in _FIELDS if getattr(args, name, None) is not None}
    env_redis_url = (os.environ if environ is None else environ).get(REDIS_URL_ENV)
    if env_redis_url and "redis_url" not in given:
        given["redis_url"] = env_redis_url
    try:
        return GatewayOptions.model_validate({**given, **overrides})
    except ValidationError as err:
        raise OptionsError(validation_problems(err, root="options")) from err
