"""Kubernetes resource quantities, summed: a replica's CPU and memory from per-GPU amounts.

Accelerator profiles give a fixed part and a per-GPU part ("0" + 2 x "10Gi");
the request is their sum, written back in the form Kubernetes shows: whole
cores or millicores for CPU, the largest binary unit that divides exactly for
memory. Only the forms `QUANTITY_PATTERN` admits are parsed (no exponents).
"""

from __future__ import annotations

import math
import re
from decimal import Decimal
from enum import Enum
from typing import Final

from modelplane.api.llmdeployment import QUANTITY_PATTERN

SUFFIXES: Final[dict[str, Decimal]] = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
BINARY_UNITS: Final = ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki")
_NUMBER: Final = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(.*)$")


class Resource(Enum):
    """How a sum is written back: CPU in cores or millicores, memory in bytes."""

    CPU = "cpu"
    MEMORY = "memory"


def parse_quantity(text: str) -> Decimal:
    """`text` in base units (cores, bytes); ValueError names the text when it is no quantity."""
    match = _NUMBER.match(text)
    if re.fullmatch(QUANTITY_PATTERN, text) is None or match is None:
        raise ValueError(f"{text!r} is not a Kubernetes quantity (e.g. 4, 500m, 32Gi)")
    number, suffix = match.groups()
    return Decimal(number) * SUFFIXES[suffix]


def format_quantity(value: Decimal, resource: Resource) -> str:
    """`value` (base units) as Kubernetes would print it, rounded up to a millicore or a byte."""
    if resource is Resource.CPU:
        millicores = math.ceil(value * 1000)
        return str(millicores // 1000) if millicores % 1000 == 0 else f"{millicores}m"
    size = math.ceil(value)
    for unit in BINARY_UNITS:
        step = int(SUFFIXES[unit])
        if size >= step and size % step == 0:
            return f"{size // step}{unit}"
    return str(size)


def per_gpu_total(fixed: str, per_gpu: str, gpus: int, resource: Resource) -> str:
    """`fixed` plus `gpus` times `per_gpu`; `fixed` as written when there is nothing to add."""
    share = parse_quantity(per_gpu) * gpus
    if share == 0:
        return fixed
    return format_quantity(parse_quantity(fixed) + share, resource)
