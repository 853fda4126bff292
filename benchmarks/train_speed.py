"""Training speed of golf's real training loop: ms/step, tokens/s and MFU against this machine's peak.

    python benchmarks/train_speed.py [--params FILE] [--set key=value ...] [--steps N] [--warmup N]
                                     [--data DIR]

Runs `stages.train.loop.train` itself (model, Muon + Adam, EMA, sampler, autocast, train.compile) for
warmup + steps optimizer steps and times each step from its `on_step` callback; ms/step is the median
of the steps after the warm-up. Without --data it trains on a shard of uniform random token ids
(step time does not depend on the token values), so no tokenized corpus is needed.

Model FLOPs per token (training = forward + backward), the PaLM-paper count:

    6 * N_matmul + 12 * L * T * d

N_matmul: weights that multiply activations (every block matrix, plus the tied embedding once, as
the output head; the embedding lookup and the control vectors are not matmuls). 12*L*T*d: attention
scores QK^T and the weighted sum AV over a context of T = seq_len, without halving for the causal
mask. MFU = achieved FLOP/s / peak, where the peak is measured here: the best of a few large square
matmuls in the dtype the training matmuls run in (bf16 under autocast, else fp32).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# Run from a checkout without installing: the repository root holds the `stages` package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from golfcli.params import load_params  # noqa: E402
from stages.data.shards import load_train_tokens, write_shard  # noqa: E402
from stages.device import resolve_device  # noqa: E402
from stages.model.config import ModelConfig  # noqa: E402
from stages.model.gpt import build_model, count_parameters  # noqa: E402
from stages.train.loop import Hooks, train  # noqa: E402

FLOPS_FORMULA = "6 * N_matmul + 12 * L * T * d"


def matmul_params(cfg: ModelConfig) -> int:
    """Weights that multiply activations, the tied embedding counted once (as the head)."""
    with torch.device("meta"):
        model = build_model(cfg, device="meta")
    roles = model.roles_by_name()
    return sum(p.numel() for name, p in model.named_parameters() if roles[name].kind != "control")


def flops_per_token(cfg: ModelConfig, seq_len: int) -> int:
    return 6 * matmul_params(cfg) + 12 * cfg.num_layers * seq_len * cfg.model_dim


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 2048, repeat: int = 5) -> float:
    """Best FLOP/s of an n x n x n matmul on `device` in `dtype` (2 n^3 FLOPs each)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    best = float("inf")
    for _ in range(repeat + 1):  # the first call warms up the kernels
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_train_dir(vocab_size: int, tokens: int, seed: int = 0) -> Path:
    """A temporary data directory with one train shard of uniform random token ids."""
    out = Path(tempfile.mkdtemp(prefix="golf-speed-"))
    ids = np.random.default_rng(seed).integers(0, vocab_size, size=tokens, dtype=np.int64)
    write_shard(out / "train_000000.bin", ids)
    return out


def time_steps(data_dir: Path, model_cfg, train_p) -> list[float]:
    """Seconds of each optimizer step of a real `train` run (from consecutive on_step calls)."""
    stamps = [time.perf_counter()]
    train(load_train_tokens(data_dir), model_cfg, train_p, parents={}, provenance={},
          hooks=Hooks(on_step=lambda info: stamps.append(time.perf_counter())))
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", type=Path, default=None, help="params file [./params.yaml]")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="override, `train.key` or `model.key` (repeatable)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (compile, caches)")
    ap.add_argument("--data", type=Path, default=None,
                    help="data directory with train shards [random tokens]")
    args = ap.parse_args(argv)

    p = load_params(args.params, ("train", "model"), tuple(args.overrides))
    model_cfg = p["model"]
    train_p = dataclasses.replace(p["train"], max_steps=args.warmup + args.steps,
                                  max_wallclock_seconds=0.0)
    device = resolve_device(train_p.device)
    data_dir = args.data or random_train_dir(model_cfg.vocab_size, 64 * train_p.batch_tokens)

    step_s = statistics.median(time_steps(data_dir, model_cfg, train_p)[args.warmup:])
    tokens_per_s = train_p.batch_tokens / step_s
    fpt = flops_per_token(model_cfg, train_p.seq_len)
    peaks = {name: matmul_peak(device, dtype)
             for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32))}
    used = "fp32" if train_p.autocast == "off" else "bf16"
    n_params = count_parameters(model_cfg)

    print(f"device            {device} ({torch.get_num_threads()} CPU threads)"
          if device.type == "cpu" else f"device            {torch.cuda.get_device_name(device)}")
    print(f"model             {model_cfg.num_layers}L x {model_cfg.model_dim}, vocab "
          f"{model_cfg.vocab_size}, seq {train_p.seq_len}; {n_params:,} parameters "
          f"({matmul_params(model_cfg):,} in matmuls)")
    print(f"tokens/step       {train_p.batch_tokens:,} (grad_accum {train_p.grad_accum_steps}, "
          f"autocast {train_p.autocast}, compile {train_p.compile})")
    print(f"ms/step           {1000 * step_s:.1f} (median of {args.steps} after {args.warmup} warm-up)")
    print(f"tokens/s          {tokens_per_s:,.0f}")
    print(f"FLOPs/token       {fpt:,} = {FLOPS_FORMULA}")
    print(f"matmul peak       bf16 {peaks['bf16'] / 1e9:,.1f} GFLOP/s, fp32 "
          f"{peaks['fp32'] / 1e9:,.1f} GFLOP/s (2048^3; {used} used for MFU)")
    print(f"achieved          {fpt * tokens_per_s / 1e9:,.1f} GFLOP/s, "
          f"MFU {fpt * tokens_per_s / peaks[used]:.1%}")


if __name__ == "__main__":
    main()
