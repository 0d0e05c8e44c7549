"""Per-GPU requests: quantities summed and written back as Kubernetes writes them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from modelplane.operator.quantities import (
    Resource,
    format_quantity,
    parse_quantity,
    per_gpu_total,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [("4", Decimal(4)), ("500m", Decimal("0.5")), ("1.5", Decimal("1.5")),
     ("10Gi", Decimal(10 * 2**30)), ("1G", Decimal(10**9)), ("64Mi", Decimal(64 * 2**20))],
)  # fmt: skip
def test_quantities_parse_to_base_units(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["lots", "", "1e3", "-1", "4 Gi", "10gi"])
def test_a_non_quantity_is_refused_by_name(text: str) -> None:
    with pytest.raises(ValueError, match="is not a Kubernetes quantity"):
        parse_quantity(text)


@pytest.mark.parametrize(
    ("fixed", "per_gpu", "gpus", "resource", "total"),
    [
        ("0", "3", 2, Resource.CPU, "6"),
        ("500m", "250m", 3, Resource.CPU, "1250m"),
        ("1", "500m", 2, Resource.CPU, "2"),
        ("0", "10Gi", 8, Resource.MEMORY, "80Gi"),
        ("4Gi", "512Mi", 1, Resource.MEMORY, "4608Mi"),
        ("1G", "1Mi", 1, Resource.MEMORY, "1001048576"),
        # Nothing added: the fixed part as written, whatever its form.
        ("1.5", "0", 4, Resource.CPU, "1.5"),
        ("32Gi", "8Gi", 0, Resource.MEMORY, "32Gi"),
    ],
)
def test_per_gpu_totals(
    fixed: str, per_gpu: str, gpus: int, resource: Resource, total: str
) -> None:
    assert per_gpu_total(fixed, per_gpu, gpus, resource) == total
    assert parse_quantity(total) == parse_quantity(fixed) + gpus * parse_quantity(per_gpu)


def test_fractions_round_up_to_a_millicore_or_a_byte() -> None:
    assert format_quantity(Decimal("0.0001"), Resource.CPU) == "1m"
    assert format_quantity(Decimal("1000.5"), Resource.MEMORY) == "1001"
    assert format_quantity(Decimal("1023.5"), Resource.MEMORY) == "1Ki"
    assert format_quantity(Decimal(2**40), Resource.MEMORY) == "1Ti"
