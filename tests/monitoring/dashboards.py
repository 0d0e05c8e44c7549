"""The chart's Grafana dashboards as data: panels, their PromQL, and Grafana's variables.

Grafana replaces template variables before a query reaches Prometheus; the
tests do the same with `substitute`, so the text Prometheus evaluates is the
text a dashboard would send.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.chart.helm import CHART

DASHBOARDS = sorted((CHART / "dashboards").glob("*.json"))
# Grafana's own interval variables: any window that covers the test's traffic.
BUILTINS = {"__rate_interval": "5m", "__interval": "1m", "__range": "5m"}


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    ref_id: str
    expr: str

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.dashboard, self.panel, self.ref_id)

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel} [{self.ref_id}]"


def load(path: Path) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(path.read_text())
    return board


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # panels inside collapsed rows


def queries(board: dict[str, Any]) -> list[Query]:
    return [
        Query(board["title"], p["title"], t["refId"], t["expr"])
        for p in panels(board)
        for t in p.get("targets", [])
    ]


def all_queries() -> list[Query]:
    return [q for path in DASHBOARDS for q in queries(load(path))]


def variables(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in board["templating"]["list"]}


def substitute(expr: str, values: dict[str, str]) -> str:
    """Replace `$name` and `${name}` as Grafana does (regex values used as-is).

    `$1`-style references (label_replace's capture groups) are no variables and
    stay; any other name without a value is an error, so a typo cannot hide.
    """
    merged = {**BUILTINS, **values}

    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name.isdigit():
            return m.group(0)
        if name not in merged:
            raise KeyError(f"no value for ${name} in {expr}")
        return merged[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", repl, expr)


LABEL_VALUES = re.compile(r"^label_values\((?:(?P<match>.+),\s*)?(?P<label>\w+)\)$")


def label_values_query(query: str) -> tuple[str | None, str]:
    """(series selector or None, label) of a Grafana `label_values(...)` variable query."""
    m = LABEL_VALUES.match(query.strip())
    if m is None:
        raise ValueError(f"not a label_values() query: {query}")
    return m.group("match"), m.group("label")
