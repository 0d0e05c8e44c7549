"""A small random LoRA adapter for a local Llama-style model, in PEFT's file format.

Tests and the LoRA benchmark need an adapter for SmolLM2-135M without
downloading one (and without `peft`): this writes `adapter_config.json` and
`adapter_model.safetensors` with seeded random weights on `q_proj` and
`v_proj` of every layer, shaped from the model's own `config.json`. The B
matrices are far from PEFT's zero initialisation and large enough that the
adapted model's greedy answers differ from the base model's; what the
adapter "learned" is noise, which is all a test of serving needs. From a shell:
`python -m tests.support.lora_adapter MODEL_DIR OUT_DIR [--seed N] [--rank R]`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

import torch
from safetensors.torch import save_file

TARGET_MODULES: Final = ("q_proj", "v_proj")
# Scale of B's entries: with A's rows of unit norm, the adapter adds about this much (times
# alpha / r) to each query and value entry, the size of the base model's own entries.
B_SCALE: Final = 0.5


def write_random_adapter(
    model_dir: Path, out_dir: Path, *, seed: int = 0, rank: int = 8, alpha: int = 16
) -> Path:
    """Write a LoRA adapter for the model in `model_dir` into `out_dir`; returns `out_dir`.

    The same model, seed and rank give byte-identical files.
    """
    config = json.loads((model_dir / "config.json").read_text())
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads", heads))
    head_dim = int(config.get("head_dim") or hidden // heads)
    layers = int(config["num_hidden_layers"])
    out_features = {"q_proj": heads * head_dim, "v_proj": kv_heads * head_dim}

    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    for layer in range(layers):
        for module in TARGET_MODULES:
            prefix = f"base_model.model.model.layers.{layer}.self_attn.{module}"
            a = torch.randn(rank, hidden, generator=generator) / hidden**0.5
            b = torch.randn(out_features[module], rank, generator=generator) * B_SCALE
            tensors[f"{prefix}.lora_A.weight"] = a.contiguous()
            tensors[f"{prefix}.lora_B.weight"] = b.contiguous()

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out_dir / "adapter_model.safetensors"))
    adapter_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": str(model_dir),
        "r": rank,
        "lora_alpha": alpha,
        "lora_dropout": 0.0,
        "bias": "none",
        "target_modules": list(TARGET_MODULES),
        "fan_in_fan_out": False,
        "inference_mode": True,
    }
    (out_dir / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2) + "\n")
    return out_dir


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.support.lora_adapter MODEL_DIR OUT_DIR [--seed N] [--rank R]`."""
    import argparse

    parser = argparse.ArgumentParser(description="Write a random LoRA adapter for a local model.")
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rank", type=int, default=8)
    args = parser.parse_args(argv)
    print(write_random_adapter(args.model_dir, args.out_dir, seed=args.seed, rank=args.rank))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
