"""`modelplane model build`: placeholder registration, filled in by the model builder."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("model", help="Local model tools.")
    parser.set_defaults(handler=lambda _args: 2)
