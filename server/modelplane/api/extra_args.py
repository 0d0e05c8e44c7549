"""Which vLLM flags `engine.extraArgs` may pass, spelled any way vLLM accepts them.

`extraArgs` reaches vLLM's own argument parser, which is generous: it turns
underscores into dashes (`--served_model_name`), takes `--flag=value` and
`--flag value`, `--no-flag` for switches, dotted keys into a JSON flag
(`--compilation-config.mode=3`), `-O3`, short aliases (`-tp 2`), and, as
argparse does, any unambiguous prefix of a flag (`--trust-remote`). A list of
refused flags loses against that; a list of allowed ones does not. So every
item is normalised the way vLLM reads it and its flag must be on `ALLOWED`,
exactly: the common tuning flags of the installed vLLM (tests check the table
against its parser). Everything else is refused with a sentence that says
why: a typed field sets it (`owned`), it is unsafe (`UNSAFE`: code from the
model or a plugin, files of the pod, requests choosing their own templates or
tensors), or it is simply not on the list.

Flags the operator itself derives from the spec (`--revision` from
`spec.model.revision`, `--load-format` for an s3:// source) are refused in an
LLMDeployment but accepted on `modelplane serve --engine-arg`, whose command
line is the operator's (or a local user's) and not a tenant's: that caller
validates with `SERVE_COMMAND_LINE` in the pydantic context.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Final


class Takes(Enum):
    SWITCH = "switch"  # --flag / --no-flag
    VALUE = "value"  # --flag=V or --flag V
    VALUES = "values"  # --flag V [V ...]
    JSON = "json"  # --flag '{...}', or --flag.key=V (vLLM builds the JSON)


# The pydantic validation context key under which `modelplane serve` validates its
# own --engine-arg flags (see the module docstring).
SERVE_COMMAND_LINE: Final = "modelplane-serve-command-line"

ALLOWED: Final[Mapping[str, Takes]] = {
    # Scheduling and batching.
    "--max-num-seqs": Takes.VALUE,
    "--max-num-batched-tokens": Takes.VALUE,
    "--enable-chunked-prefill": Takes.SWITCH,
    "--long-prefill-token-threshold": Takes.VALUE,
    "--scheduling-policy": Takes.VALUE,
    "--async-scheduling": Takes.SWITCH,
    "--stream-interval": Takes.VALUE,
    # Memory and the KV cache.
    "--block-size": Takes.VALUE,
    "--cpu-offload-gb": Takes.VALUE,
    "--kv-cache-memory-bytes": Takes.VALUE,
    "--num-gpu-blocks-override": Takes.VALUE,
    "--prefix-caching-hash-algo": Takes.VALUE,
    "--kv-offloading-size": Takes.VALUE,
    "--kv-offloading-backend": Takes.VALUE,
    # Compilation, CUDA graphs and kernels.
    "--compilation-config": Takes.JSON,
    "--cudagraph-capture-sizes": Takes.VALUES,
    "--max-cudagraph-capture-size": Takes.VALUE,
    "--optimization-level": Takes.VALUE,
    "--performance-mode": Takes.VALUE,
    "--attention-backend": Takes.VALUE,
    "--disable-custom-all-reduce": Takes.SWITCH,
    "--disable-sliding-window": Takes.SWITCH,
    "--disable-cascade-attn": Takes.SWITCH,
    # Parallelism beyond tensorParallelSize.
    "--pipeline-parallel-size": Takes.VALUE,
    "--data-parallel-size": Takes.VALUE,
    "--enable-expert-parallel": Takes.SWITCH,
    "--enable-eplb": Takes.SWITCH,
    "--eplb-config": Takes.JSON,
    "--max-parallel-loading-workers": Takes.VALUE,
    # Decoding and sampling.
    "--seed": Takes.VALUE,
    "--max-logprobs": Takes.VALUE,
    "--logprobs-mode": Takes.VALUE,
    "--speculative-config": Takes.JSON,
    "--override-generation-config": Takes.JSON,
    "--structured-outputs-config": Takes.JSON,
    # The model's configuration (rope scaling and the like: vLLM 0.32 has no --rope-scaling;
    # `--hf-overrides '{"rope_scaling": {...}}'` sets it) and tokenizer.
    "--hf-overrides": Takes.JSON,
    "--tokenizer-mode": Takes.VALUE,
    "--model-impl": Takes.VALUE,
    # Multimodal input limits.
    "--limit-mm-per-prompt": Takes.JSON,
    "--mm-processor-kwargs": Takes.JSON,
    "--mm-processor-cache-gb": Takes.VALUE,
    # Chat, reasoning and the OpenAI answers.
    "--reasoning-parser": Takes.VALUE,
    "--chat-template-content-format": Takes.VALUE,
    "--default-chat-template-kwargs": Takes.JSON,
    "--response-role": Takes.VALUE,
    "--return-tokens-as-token-ids": Takes.SWITCH,
    "--enable-prompt-tokens-details": Takes.SWITCH,
    "--enable-force-include-usage": Takes.SWITCH,
    "--exclude-tools-when-tool-choice-none": Takes.SWITCH,
    # LoRA adapters (--max-loras and --max-lora-rank are typed: engine.maxLoras, maxLoraRank).
    "--max-cpu-loras": Takes.VALUE,
    "--lora-dtype": Takes.VALUE,
    "--fully-sharded-loras": Takes.SWITCH,
    # Logging.
    "--max-log-len": Takes.VALUE,
    "--disable-log-stats": Takes.SWITCH,
}

# On `modelplane serve --engine-arg` only: what the operator derives from the spec.
FROM_THE_SPEC: Final[Mapping[str, tuple[Takes, str]]] = {
    "--revision": (Takes.VALUE, "spec.model.revision"),
    "--load-format": (Takes.VALUE, "spec.model.source (an s3:// source streams its weights)"),
}

_CODE = "it runs Python code that is not part of the image"
UNSAFE: Final[Mapping[str, str]] = {
    "--trust-remote-code": "it runs Python code shipped with the model",
    "--allowed-local-media-path": "it lets requests read files from the pod's disk",
    "--tool-parser-plugin": _CODE,
    "--reasoning-parser-plugin": _CODE,
    "--logits-processors": _CODE,
    "--worker-cls": _CODE,
    "--worker-extension-cls": _CODE,
    "--scheduler-cls": _CODE,
    "--middleware": _CODE,
    "--io-processor-plugin": _CODE,
    "--config": "it reads more flags from a file in the pod, unchecked",
    "--chat-template": "a template file or text replaces the model's; bake it into the image",
    "--trust-request-chat-template": "it lets requests run chat templates of their own",
    "--trust-request-mm-kwargs": "it lets requests pass processor arguments of their own",
    "--enable-prompt-embeds": "it lets requests send tensors the engine deserialises",
    "--enable-mm-embeds": "it lets requests send tensors the engine deserialises",
    "--hf-token": "a credential on the command line is visible to anyone who can read the pod",
    "--download-dir": "the operator chooses where weights go",
    "--kv-transfer-config": "it connects the engine to other hosts",
    "--ssl-keyfile": "TLS is not the engine's business here",
    "--enable-log-requests": "it writes every prompt to the logs",
}

# vLLM's short spellings of long flags.
SHORT: Final[Mapping[str, str]] = {
    "-q": "--quantization",
    "-tp": "--tensor-parallel-size",
    "-pp": "--pipeline-parallel-size",
    "-dp": "--data-parallel-size",
    "-ep": "--enable-expert-parallel",
    "-sc": "--speculative-config",
    "-cc": "--compilation-config",
    "-O": "--optimization-level",
}
_NUMBER: Final = re.compile(r"^-\d+(\.\d+)?$")


def canonical_flag(item: str) -> tuple[str, str | None, bool]:
    """(the long flag vLLM reads, the value written with it or None, whether it was
    dotted) for one `extraArgs` item that starts with a dash."""
    if item.startswith("--"):
        key, eq, value = item.partition("=")
        base, dot, _ = key.partition(".")
        # vLLM turns underscores into dashes in the name (up to the first dot).
        return base.replace("_", "-"), (value if eq else None), bool(dot)
    if item.startswith("-O") and item != "-O":  # -O3, -O=3
        return "--optimization-level", item[3:] if item[2:3] == "=" else item[2:], False
    key, eq, value = item.partition("=")
    return SHORT.get(key, key), (value if eq else None), False


def extra_args_problem(
    items: Sequence[str], owned: Mapping[str, str], *, from_serve_command_line: bool = False
) -> str | None:
    """The first reason `items` cannot be passed to vLLM, or None when every one may.

    `owned`: flags a typed field (or the server itself) sets -> who sets it.
    """
    expecting: str | None = None  # a flag that takes values, written without one
    expecting_many = False  # ...which takes one or more (and `values` so far)
    values = 0
    for index, item in enumerate(items):
        if not item:
            return f"extraArgs item {index} is empty"
        is_flag = item.lstrip().startswith("-") and not (expecting and _NUMBER.match(item))
        if is_flag and (item != item.strip() or " " in item.partition("=")[0]):
            return (
                f"extraArgs item {item!r} has spaces in its flag; write one flag or value "
                "per item (--flag=value, or --flag and value as two items)"
            )
        if not is_flag:
            if expecting is None:
                return f"extraArgs item {item!r} is a value with no flag before it"
            values += 1
            if not expecting_many:
                expecting = None
            continue
        if expecting is not None and values == 0:
            return f"extraArgs sets {expecting} without a value"
        flag, inline, dotted = canonical_flag(item)
        spelled = "" if flag == item.partition("=")[0] else f" (written {item.partition('=')[0]})"
        negated = flag.startswith("--no-")
        plain = "--" + flag.removeprefix("--no-") if negated else flag
        for name in (flag, plain):
            if name in owned:
                return (
                    f"extraArgs sets {name}{spelled}, which {owned[name]} already controls; "
                    "use that field instead"
                )
            if name in UNSAFE:
                return f"extraArgs may not set {name}{spelled}: {UNSAFE[name]}"
        takes = ALLOWED.get(plain)
        if takes is None and plain in FROM_THE_SPEC:
            if not from_serve_command_line:
                return (
                    f"extraArgs sets {plain}{spelled}, which the operator derives from "
                    f"{FROM_THE_SPEC[plain][1]}; set that instead"
                )
            takes = FROM_THE_SPEC[plain][0]
        if takes is None:
            return (
                f"extraArgs may not set {plain}{spelled}: it is not one of the engine flags "
                "Modelplane passes to vLLM (the list: docs/reference/engine-flags.md)"
            )
        if negated and takes is not Takes.SWITCH:
            return f"extraArgs sets {flag}{spelled}, but {plain} is not a switch"
        if dotted and takes is not Takes.JSON:
            return f"extraArgs item {item!r}: only JSON flags take dotted keys"
        if takes is Takes.SWITCH:
            if inline is not None:
                return f"extraArgs sets {plain}{spelled} to a value; it is a switch"
            expecting, expecting_many = None, False
        elif inline is None:
            expecting, expecting_many, values = plain, takes is Takes.VALUES, 0
        else:
            expecting, expecting_many = None, False
    if expecting is not None and values == 0:
        return f"extraArgs sets {expecting} without a value"
    return None


def flag_value(items: Sequence[str], flag: str) -> str | None:
    """The value `items` (already checked by `extra_args_problem`) give `flag` (a long
    flag, e.g. `--max-num-seqs`), the last one when given twice; None when not given."""
    found: str | None = None
    for index, item in enumerate(items):
        if not item.startswith("-") or canonical_flag(item)[0] != flag:
            continue
        inline = canonical_flag(item)[1]
        if inline is not None:
            found = inline
        elif index + 1 < len(items) and not items[index + 1].startswith("-"):
            found = items[index + 1]
    return found
