"""`modelplane serve`: placeholder registration, filled in by the model builder."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser("serve", help="Serve a model.")
    parser.set_defaults(handler=lambda _args: 2)
