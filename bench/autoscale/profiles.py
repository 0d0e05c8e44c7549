"""The simulator's two calibrations, with the measurements they are fitted to.

CPU: fitted to the real `modelplane serve` measured on this machine
(`python -m bench.autoscale.real --calibrate`, under the engine lock):
vLLM 0.32 CPU engine, SmolLM2-135M-Instruct, `--enforce-eager`,
`VLLM_CPU_KVCACHE_SPACE=1`, 2 cores shared with other work (load average
about 6 during the run, so these are busy-machine numbers).

GPU: fitted to a published vLLM concurrency sweep: Mistral-7B-Instruct-v0.3
on one RTX 4090 (24 GB), vLLM OpenAI server, 256 input / 128 output tokens,
`max-concurrency` 4..48 (M. Rahman, "vLLM capacity planning on an RTX 4090",
https://mushfiqrahman.dev/?p=1668). Its KV cache is not in the post; it is
derived from the model's shape: 0.9 x 24 GB minus 14.5 GB of bf16 weights
and about 1.5 GB of activations leaves about 5.6 GB, at 128 KiB per token
(32 layers x 8 KV heads x 128 x 2 x bf16) about 42,000 tokens.

Start-up, phase by phase. CPU: one eager `modelplane serve` start on this
machine, read off its own log (`CPU_STARTUP_PHASES`).
GPU: a published cached start of vLLM with an 8B model, Llama-3.1-8B-Instruct
on one L40S with the Hugging Face, torch.compile and other caches kept on a
volume under /root/.cache (S. Rawat, "Reducing GPU Cold Start Time when using
vLLM", Tensorfuse, 1 September 2025,
https://tensorfuse.io/docs/blogs/reducing_gpu_cold_start): 82 s, against
294 s with nothing cached. The simulator's replica is ready that long after
it is asked for; scheduling and image pull are left out (a warm node).

`python -m bench.autoscale.profiles` re-runs both fits (a grid search that
replays each measured closed-loop run in the simulator) and prints the
table of measured vs fitted; the constants below are its output.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np

from bench.autoscale.model import Cluster, HoldReplicas, Profile, Workload

# --- CPU: measured here ----------------------------------------------------
# Time to first token of one request alone (median of 3), by prompt length.
CPU_PREFILL_TTFT_S = {16: 0.0483, 256: 0.3914, 1024: 1.9056}
# Closed loop, prompt 128, output 48 (ignore_eos), 3 x concurrency requests:
# concurrency: (requests/s, mean time per output token ms, TTFT p50 ms)
CPU_SWEEP = {
    1: (0.539, 34.8, 195.0),
    4: (1.644, 38.8, 729.0),
    16: (2.958, 60.2, 2781.0),
    32: (3.275, 122.5, 3246.0),
    64: (3.468, 274.8, 5358.0),
}
CPU_SWEEP_SHAPE = (128, 48)
# One eager start (`modelplane serve --enforce-eager`, SmolLM2-135M, 2 cores shared
# with other work), from the process start to the server's "ready" log line.
# Read off the server's log lines (the first phase, which the log cannot see,
# from a second start); load average about 6 during it, like the calibration.
# Most of it is Python starting processes and importing torch and vLLM.
CPU_STARTUP_PHASES = (
    ("process start and imports", 11.1),
    ("API server up, engine configured", 13.2),
    ("engine process started", 21.7),
    ("worker process started", 25.0),
    ("weights loaded", 1.1),
    ("KV cache and engine warm-up", 6.9),
    ("API routes and warm-up request", 5.8),
)
CPU_KV_TOKENS = 46_592  # engine log: "CPU KV cache size: 46,592 tokens"

# --- GPU: published --------------------------------------------------------
# concurrency: (requests/s, output tokens/s, mean TTFT ms, median TTFT ms)
GPU_SWEEP = {
    4: (2.09, 210.0, 63.0, 53.0),
    8: (3.78, 377.0, 79.0, 55.0),
    16: (6.44, 644.0, 155.0, 97.0),
    32: (9.73, 975.0, 362.0, 277.0),
    48: (11.87, 1190.0, 667.0, 840.0),
}
GPU_SWEEP_SHAPE = (256, 128)
# Tensorfuse's cached start of Llama-3.1-8B-Instruct on an L40S (see above):
# nothing to download, every cache warm.
GPU_STARTUP_PHASES = (
    ("weights loaded", 18.0),
    ("dynamo bytecode transform", 10.0),
    ("graph compilation (cached)", 13.0),
    ("CUDA graph capture", 7.0),
    ("imports and engine init", 34.0),
)

CPU = Profile(
    name="cpu",
    step_base_s=0.029,
    step_per_seq_s=0.0018,
    prefill_per_token_s=0.001283,
    prefill_per_token2_s=5.38e-7,
    chunk_tokens=2048,  # vLLM's CPU default max_num_batched_tokens
    max_num_seqs=128,  # vLLM's CPU default for the OpenAI server
    kv_tokens=CPU_KV_TOKENS,
    startup_s=sum(secs for _, secs in CPU_STARTUP_PHASES),
    startup_phases=CPU_STARTUP_PHASES,
    prompt=(48.0, 0.6, 8, 512),
    output=(32.0, 0.5, 4, 128),
    slo_ttft_s=1.0,
    unit_rps=4.0,
    source="fitted to modelplane serve on this machine (vLLM 0.32 CPU, SmolLM2-135M)",
)

GPU = Profile(
    name="gpu",
    step_base_s=0.0125,
    step_per_seq_s=0.0001,
    prefill_per_token_s=0.00013,
    prefill_per_token2_s=0.0,
    chunk_tokens=2048,  # vLLM's default max_num_batched_tokens below 70 GB of GPU memory
    max_num_seqs=256,
    kv_tokens=42_000,
    startup_s=sum(secs for _, secs in GPU_STARTUP_PHASES),
    startup_phases=GPU_STARTUP_PHASES,
    prompt=(256.0, 0.7, 16, 2048),
    output=(160.0, 0.6, 8, 1024),
    slo_ttft_s=1.0,
    unit_rps=6.0,
    source="fitted to a published vLLM sweep (Mistral-7B, RTX 4090)",
)


class _ClosedLoop(Cluster):
    """`concurrency` clients, each sending its next request when the last one ends."""

    def __init__(self, profile: Profile, concurrency: int, requests: int, shape: tuple[int, int]):
        workload = Workload(
            arrival=np.full(requests, math.inf),
            prompt=np.full(requests, shape[0], dtype=np.int64),
            output=np.full(requests, shape[1], dtype=np.int64),
        )
        super().__init__(profile, workload, HoldReplicas(), initial=1)
        self.sent = 0
        for _ in range(min(concurrency, requests)):
            self.arrive_later(self.sent, 0.0)
            self.sent += 1

    def on_finish(self, rid: int) -> None:
        if self.sent < len(self.w):
            self.arrive_later(self.sent, self.now)
            self.sent += 1


def closed_loop(
    profile: Profile, concurrency: int, shape: tuple[int, int], rounds: int = 3
) -> tuple[float, float, float, float]:
    """(requests/s, mean TPOT ms, TTFT p50 ms, TTFT mean ms) of a closed-loop run."""
    sim = _ClosedLoop(profile, concurrency, concurrency * rounds, shape)
    sim.run(duration_s=0.0, grace_s=1e7)
    ttft = sim.first_token - sim.w.arrival
    e2e = sim.last_finish - sim.w.arrival
    wall = float(np.max(sim.last_finish))
    tpot = (e2e - ttft) / max(1, shape[1] - 1)
    return (
        len(ttft) / wall,
        1000 * float(np.mean(tpot)),
        1000 * float(np.median(ttft)),
        1000 * float(np.mean(ttft)),
    )


def _cpu_error(profile: Profile) -> float:
    err = 0.0
    for conc, (rps, tpot, ttft50) in CPU_SWEEP.items():
        s_rps, s_tpot, s_ttft50, _ = closed_loop(profile, conc, CPU_SWEEP_SHAPE)
        err += math.log(s_rps / rps) ** 2 + math.log(s_tpot / tpot) ** 2
        err += 0.5 * math.log(s_ttft50 / ttft50) ** 2
    return err


def _gpu_error(profile: Profile) -> float:
    err = 0.0
    for conc, (rps, _, ttft_mean, _) in GPU_SWEEP.items():
        s_rps, _, _, s_ttft_mean = closed_loop(profile, conc, GPU_SWEEP_SHAPE, rounds=6)
        err += math.log(s_rps / rps) ** 2 + 0.5 * math.log(s_ttft_mean / ttft_mean) ** 2
    return err


def fit() -> tuple[Profile, Profile]:
    # Prefill on CPU from the lone-request TTFTs: t(p) = base + c1 p + c2 p^2.
    lengths = sorted(CPU_PREFILL_TTFT_S)
    a = np.array([[1.0, p, p * p] for p in lengths])
    base, c1, c2 = np.linalg.solve(a, np.array([CPU_PREFILL_TTFT_S[p] for p in lengths]))
    cpu_best = min(
        (
            replace(
                CPU,
                step_base_s=sb,
                step_per_seq_s=sp,
                prefill_per_token_s=c1,
                prefill_per_token2_s=c2,
            )
            for sb, sp in itertools.product(
                (0.020, 0.023, 0.026, 0.029), (0.0006, 0.0012, 0.0018, 0.0024, 0.003)
            )
        ),
        key=_cpu_error,
    )
    print(
        f"CPU prefill fit: base {base * 1000:.1f} ms, {c1 * 1000:.3f} ms/token, "
        f"{c2 * 1e6:.3f} us/token^2"
    )
    gpu_best = min(
        (
            replace(GPU, step_base_s=sb, step_per_seq_s=sp, prefill_per_token_s=pf)
            for sb, sp, pf in itertools.product(
                (0.0105, 0.0125, 0.0145), (0.00002, 0.0001, 0.0002), (0.00013, 0.00017, 0.00021)
            )
        ),
        key=_gpu_error,
    )
    return cpu_best, gpu_best


def main() -> None:
    cpu, gpu = fit()
    print(f"CPU fit: step {cpu.step_base_s * 1000:.1f} ms + {cpu.step_per_seq_s * 1000:.2f} ms/seq")
    print(
        f"{'conc':>5} {'req/s real':>11} {'sim':>7} {'TPOT real':>10} {'sim':>7} "
        f"{'TTFT50 real':>12} {'sim':>7}"
    )
    for conc, (rps, tpot, ttft50) in CPU_SWEEP.items():
        s = closed_loop(cpu, conc, CPU_SWEEP_SHAPE)
        print(
            f"{conc:>5} {rps:>11.2f} {s[0]:>7.2f} {tpot:>10.1f} {s[1]:>7.1f} "
            f"{ttft50:>12.0f} {s[2]:>7.0f}"
        )
    print(
        f"GPU fit: step {gpu.step_base_s * 1000:.1f} ms + {gpu.step_per_seq_s * 1000:.3f} ms/seq, "
        f"prefill {gpu.prefill_per_token_s * 1000:.3f} ms/token"
    )
    print(f"{'conc':>5} {'req/s pub':>10} {'sim':>7} {'TTFT mean pub':>14} {'sim':>7}")
    for conc, (rps, _, ttft_mean, _) in GPU_SWEEP.items():
        s = closed_loop(gpu, conc, GPU_SWEEP_SHAPE, rounds=6)
        print(f"{conc:>5} {rps:>10.2f} {s[0]:>7.2f} {ttft_mean:>14.0f} {s[3]:>7.0f}")


if __name__ == "__main__":
    main()
