"""`modelplane usage`: who used what this period, per tenant, from Prometheus (for chargeback).

    modelplane usage --prometheus http://prometheus.monitoring:9090 [--period month] [--csv]

Reads the gateways' per-tenant counters (`tenants.usage` says how they are
counted exactly) over the current calendar period in UTC and prints one row
per tenant: requests, tokens in and out, budget used, and the tenant's share
of each model's tokens. `--csv` prints one line per tenant and model instead.
"""

from __future__ import annotations

import argparse
import math
import sys
from datetime import datetime
from typing import Any

from modelplane.gateway.tenants.config import Period

QUERY_TIMEOUT_S = 30.0
# Samples per series at most: the step grows with the period (a month at one an hour).
MAX_SAMPLES = 720
MIN_STEP_S = 15


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "usage",
        help="Per-tenant usage this period, from Prometheus (for chargeback).",
        description="Print each tenant's requests, tokens in and out, budget used and share "
        "of each model this calendar period (UTC), from the gateways' counters in Prometheus.",
    )
    parser.add_argument("--prometheus", required=True, metavar="URL", help="Prometheus base URL.")
    parser.add_argument(
        "--period",
        choices=[p.value for p in Period],
        default=Period.MONTH.value,
        help="Calendar period so far, in UTC (month).",
    )
    parser.add_argument("--csv", action="store_true", help="One CSV line per tenant and model.")
    parser.add_argument(
        "--step",
        type=float,
        metavar="SECONDS",
        help="Seconds between the samples read (default: the period over 720, at least 15).",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import httpx

    from modelplane.gateway.tenants.budgets import period_bounds, utc_now
    from modelplane.gateway.tenants.usage import (
        BUDGET,
        BUDGET_SPENT,
        REQUESTS,
        TOKENS,
        render_csv,
        render_table,
        usage_rows,
    )

    period = Period(args.period)
    now = utc_now()
    start, _ = period_bounds(now, period)
    if args.step is not None and args.step <= 0:
        print("modelplane usage: --step must be positive", file=sys.stderr)
        return 2
    step_s = args.step or max(MIN_STEP_S, math.ceil((now - start).total_seconds() / MAX_SAMPLES))
    # Read at the next step after now: the subquery's samples are aligned to the step, and
    # the last one must come after the newest sample, not up to a step before it.
    at = math.ceil(now.timestamp() / step_s) * step_s
    window_s = max(1, math.ceil(at - start.timestamp()))
    base = args.prometheus.rstrip("/")

    def query(promql: str) -> list[dict[str, Any]]:
        response = httpx.get(
            f"{base}/api/v1/query",
            params={"query": promql, "time": f"{at:.3f}"},
            timeout=QUERY_TIMEOUT_S,
        )
        body = response.json()
        if response.status_code != 200 or body.get("status") != "success":
            raise RuntimeError(body.get("error") or f"HTTP {response.status_code}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    step = f"{step_s:g}s"
    try:
        rows = usage_rows(
            requests=query(f"{REQUESTS}[{window_s}s:{step}]"),
            tokens=query(f"{TOKENS}[{window_s}s:{step}]"),
            budgets=query(BUDGET),
            spent=query(BUDGET_SPENT),
            window_start=start.timestamp(),
            step_s=float(step_s),
        )
    except (httpx.HTTPError, ValueError) as err:
        print(f"modelplane usage: cannot read Prometheus at {base}: {err}", file=sys.stderr)
        return 1
    except RuntimeError as err:
        print(f"modelplane usage: Prometheus refused the query: {err}", file=sys.stderr)
        return 1
    if args.csv:
        sys.stdout.write(render_csv(rows))
    else:
        print(render_table(rows, _title(period, start, now)))
    return 0


def _title(period: Period, start: datetime, now: datetime) -> str:
    return (
        f"Usage this {period.value}: {start:%Y-%m-%d %H:%M} to {now:%Y-%m-%d %H:%M} UTC "
        "(all gateway replicas)"
    )
