"""One prepared run on one CUDA GPU, in under 8 minutes: golf's kernels, its two training presets at
full size, GPTQ, the eval, and every claim of the presets projected to 8 GPUs against its budget.

    python benchmarks/gpu_check.py [--dry-run] [--out FILE] [--deadline S] [--only A,B]
                                   [--compile on|off] [--fail SECTION] [--hang SECTION]

Sections, each in its own try/except (an error is recorded in the JSON and the run goes on), each
with a time budget, under one overall deadline (a watchdog writes what was measured and exits 3 when
it passes, so the run ends in time even if a compile hangs):

  peak            the bf16 and fp32 matmul peak of this device (MFU is measured against it)
  attention       golf's `causal_attention` on each kernel it can take (SDPA flash / efficient /
                  cuDNN / math, flash-attn if it imports) against an fp32 reference for MHA, GQA and
                  MQA, each kernel's fwd+bwd time at the training shape, causality, a bf16-autocast
                  forward of the best model against fp32, torch.compile of the attention, and the
                  GPU-marked tests (`pytest -m gpu tests/model/test_attention.py`)
  nccl            a one-process NCCL group and an all-reduce (gloo on the CPU)
  train_baseline  configs/baseline.yaml at full size, one GPU's share of the batch (65,536 of
                  524,288 tokens), compiled, bf16: ms/step, tokens/s, MFU, peak memory, compile s
  train_best      configs/best.yaml likewise (98,304 tokens per GPU), before and after looping
                  turns on (half-way through the run; the switch recompiles)
  gptq            calibration (Hessians) and GPTQ with the best preset's quantize settings on the
                  best model at full size, then the preset's codec: seconds and bytes. The weights
                  are random N(0, 0.02), not trained: the times are real, the sizes are not the
                  shipped ones (trained weights compress differently). Then the Fisher pass that
                  quantize.fisher_alpha adds to calibration, time-boxed: s per batch, projected
                  seconds and peak memory
  eval            the best preset's eval on a slice of synthetic validation tokens (documents of
                  exponential length, mean 958 = 47.9 M tokens / 50,000 documents), as `sliding`
                  and as the preset's `ttt`, time-boxed; the rate is projected to the 47.9 M-token
                  validation set split evenly over 8 GPUs (golf eval itself runs one process)

Training runs golf's own loop (stages.train.loop.train: Muon + Adam, EMA, sampler, autocast,
train.compile) on a shard of uniform random token ids; step times come from its on_step hook, and
ms/step is the median after the warm-up steps. One GPU does exactly what one rank of 8 does, less
the gradient all-reduce, so the projections to 8 GPUs leave the all-reduce out. FLOPs per token are
benchmarks/train_speed.py's count (6 N_matmul + 12 L T d), taken over the virtual layers of the
layout that runs (looped layers counted once per pass).

The last lines printed are a table: each section's status, then each budget line (bars of the issue
and projections against the 600 s budgets) with PASS or FAIL. The JSON (--out) holds every number.
Exit status: 0 when every section ran, 1 when one raised or was skipped for lack of time, 2 without
CUDA (and no --dry-run), 3 when the deadline's watchdog cut the run short.

--dry-run: the same code paths on the CPU at toy size (every preset's layer structure, width 32,
fp32, no compile, a few steps) in well under a minute; tests/test_gpu_check.py runs it so that this
script cannot rot between runs on a GPU. Its JSON says device "cpu" and dry_run true, and its
PASS/FAIL lines claim nothing about a GPU.

On a lent GPU machine (python 3.12 with its own torch; no network). Third-party imports: torch,
numpy, pyyaml, safetensors, sentencepiece and pytest are on that image; the codecs zstandard, brotli
and constriction are not and travel as wheels (golf's code paths here import none of click, dvc,
dvclive and scipy; torch itself may import tqdm). Prepare the wheels once, here, in the repository
root:

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \\
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \\
        --platform manylinux1_x86_64 -d .whl zstandard==0.25.0 brotli==1.2.1 constriction==0.5.0

then call the device tool's `run` with carry [".whl"], timeout_s 480, and the command in README.md
(section "GPU check"):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \\
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && \\
        PYTHONUNBUFFERED=1 timeout 470 python3 benchmarks/gpu_check.py \\
        --out ${OUT:-.}/gpu_check.json

(torch is the machine's own: nothing here installs it). If compiling fails there, the training
sections record the error and rerun eager; `--compile off` skips compiling altogether.

A rerun of part of it, in what device time is left: `--only train_best,eval --deadline 240`
(sections by name, comma-separated).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import itertools
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import torch

# Run from a checkout without installing: the repository root holds `stages` and `golfcli`.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from stages.eval.params import EvalParams  # noqa: E402
from stages.model.config import ModelConfig  # noqa: E402
from stages.params import build  # noqa: E402
from stages.quant.params import QuantizeParams  # noqa: E402
from stages.train.params import TrainParams  # noqa: E402

SECTIONS = ("peak", "attention", "nccl", "train_baseline", "train_best", "gptq", "eval")
# Seconds per section: (full run, dry run). They add up to less than the default deadline.
BUDGET_S = {"peak": (10, 5), "attention": (60, 25), "nccl": (10, 5), "train_baseline": (75, 20),
            "train_best": (165, 30), "gptq": (55, 20), "eval": (60, 20)}
DEADLINE_S = (440, 150)
RUN_LIMIT_S = 480  # the whole device call, start-up included, must stay within 8 minutes
N_GPUS = 8
VAL_TOKENS = 47_900_000
VAL_DOCS = 50_000
BF16_ATOL = 2e-2  # tests/model/test_attention.py's bound for unit-scale bf16 attention
# The records' logs (configs/*.yaml headers) and the issue's bars.
RECORD = {"baseline_ms": 43.5, "baseline_steps": 13_780, "best_ms": 121.7, "hessian_s": 4.7}
BAR = {"baseline_tok_s": 1.5e6, "best_tok_s_pre": 1.0e6, "best_tok_s_post": 0.8e6, "eval_s": 600.0}
WATCHED = ("torch", "numpy", "yaml", "safetensors", "sentencepiece", "zstandard", "brotli",
           "constriction", "pytest", "flash_attn", "flash_attn_interface", "click", "dvc",
           "dvclive", "scipy", "tqdm")


class SectionTimeout(Exception):
    """Raised from a progress hook when a section's time budget is spent."""


@dataclasses.dataclass
class Preset:
    model: ModelConfig
    train: TrainParams
    quantize: QuantizeParams
    eval: EvalParams
    codec: str
    codec_level: int | None


# --------------------------------------------------------------------------------------------------
# Presets, sizes, data
# --------------------------------------------------------------------------------------------------

def load_preset(name: str, dry: bool) -> Preset:
    """configs/NAME.yaml's sections (read here with yaml: golfcli's reader imports click)."""
    raw = yaml.safe_load((ROOT / "configs" / f"{name}.yaml").read_text(encoding="utf-8"))
    compress = raw.get("compress") or {}
    preset = Preset(*(build(cls, raw.get(cls.SECTION)) for cls in
                      (ModelConfig, TrainParams, QuantizeParams, EvalParams)),
                    compress.get("codec", "zstd"), compress.get("level"))
    return shrink(preset) if dry else preset


def shrink(p: Preset) -> Preset:
    """Toy size for the CPU: the same layers, loops, lanes and features, width 32, vocab 256."""
    m = p.model
    kv = 2 if m.num_kv_heads < m.num_heads else 4
    model = dataclasses.replace(m, vocab_size=256, model_dim=32, num_heads=4, num_kv_heads=kv,
                                rope_dims=min(m.rope_dims, 4), bigram_dim=min(m.bigram_dim, 16),
                                ve_dim=min(m.ve_dim, 16))
    train = dataclasses.replace(p.train, device="cpu", autocast="off", compile="off",
                                batch_tokens=N_GPUS * 4 * 32, seq_len=32)
    quant = dataclasses.replace(p.quantize, device="cpu", calib_batches=2, calib_batch_seqs=2,
                                calib_seq_len=32, keep_float_max_numel=256)
    ev = dataclasses.replace(p.eval, device="cpu", seq_len=64, stride=min(p.eval.stride, 16),
                             ttt_chunk_tokens=min(p.eval.ttt_chunk_tokens, 16),
                             ttt_lora_rank=min(p.eval.ttt_lora_rank, 4))
    return dataclasses.replace(p, model=model, train=train, quantize=quant, eval=ev)


def random_train_dir(root: Path, vocab: int, tokens: int) -> Path:
    """A data directory with one train shard of uniform random token ids (step time does not
    depend on the values)."""
    from stages.data.shards import write_shard

    out = root / f"train-v{vocab}-{tokens}"
    if not out.exists():
        out.mkdir(parents=True)
        ids = np.random.default_rng(0).integers(0, vocab, size=tokens, dtype=np.int64)
        write_shard(out / "train_000000.bin", ids)
    return out


def synthetic_val(n_tokens: int, vocab: int, mean_doc: float, seed: int = 0) -> np.ndarray:
    """n_tokens + 1 random ids, a BOS at the start of each document (exponential lengths >= 16)."""
    from stages.data.shards import BOS_ID

    rng = np.random.default_rng(seed)
    ids = rng.integers(2, vocab, size=n_tokens + 1, dtype=np.int64)
    lengths = np.maximum(16, rng.exponential(mean_doc, size=n_tokens // 16 + 2)).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    ids[starts[starts <= n_tokens]] = BOS_ID
    return ids


def random_state(cfg: ModelConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights of a GPT of `cfg`: matrices and tables N(0, 0.02), control tensors at their init."""
    from stages.model.gpt import GPT

    torch.manual_seed(seed)
    model = GPT(cfg)
    roles = model.roles_by_name()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if roles[name].kind != "control":
                p.normal_(std=0.02)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def flops_per_token(cfg: ModelConfig, seq_len: int, looping: bool) -> int:
    """6 N_matmul + 12 L T d over the virtual layers that run (train_speed.py's count, with each
    looped pass of a block counted)."""
    from stages.model.gpt import GPT
    from stages.model.plan import virtual_layers

    with torch.device("meta"):
        model = GPT(cfg)
    roles = model.roles_by_name()
    per_block, other = [0] * cfg.num_layers, 0
    for name, p in model.named_parameters():
        if roles[name].kind == "control":
            continue
        if name.startswith("blocks."):
            per_block[int(name.split(".")[1])] += p.numel()
        else:
            other += p.numel()
    layout = virtual_layers(cfg, looping)
    n_matmul = other + sum(per_block[i] for i in layout)
    return 6 * n_matmul + 12 * len(layout) * seq_len * cfg.model_dim


# --------------------------------------------------------------------------------------------------
# Timing helpers
# --------------------------------------------------------------------------------------------------

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn, device: torch.device, reps: int, warmup: int = 2) -> float:
    """Median seconds of fn() (device-synchronised)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_flops(device: torch.device, dtype: torch.dtype, n: int, reps: int) -> float:
    """Best FLOP/s of n x n x n matmuls on random data, in timed groups of 10 (no launch gaps)."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    best = float("inf")
    a @ b
    for _ in range(reps):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(10):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - t0) / 10)
    return 2 * n**3 / best


def peak_memory(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# --------------------------------------------------------------------------------------------------
# Sections: each takes the Check and the time.perf_counter() by which it should end
# --------------------------------------------------------------------------------------------------

def section_peak(c: Check, until: float) -> dict:
    n, reps = (8192, 5) if c.cuda else (256, 3)
    out = {"n": n, "method": f"best of {reps} groups of 10 n^3 matmuls, random data"}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        size = n if c.cuda or dtype == torch.float32 else 64  # CPU bf16 is emulated: keep it tiny
        out[f"{name}_tflops"] = matmul_flops(c.device, dtype, size, reps) / 1e12
    return out


def _qkv(kv: int, heads: int, seq: int, hd: int, batch: int, device, dtype, grad=False):
    g = torch.Generator(device=device).manual_seed(kv)
    return tuple(torch.randn(batch, seq, h, hd, generator=g, device=device, dtype=dtype)
                 .requires_grad_(grad) for h in (heads, kv, kv))


def _reference(q, k, v) -> torch.Tensor:
    groups = q.size(2) // k.size(2)
    q = q.float()
    k, v = k.float().repeat_interleave(groups, 2), v.float().repeat_interleave(groups, 2)
    scores = torch.einsum("bthd,bshd->bhts", q, k) / math.sqrt(q.size(-1))
    t = q.size(1)
    mask = torch.triu(torch.ones(t, t, dtype=torch.bool, device=q.device), 1)
    return torch.einsum("bhts,bshd->bthd", scores.masked_fill(mask, float("-inf")).softmax(-1), v)


def _attention_kernels():
    """name -> a callable (q, k, v) running golf's causal_attention on that kernel only."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from stages.model import attention as att

    flash = att._flash_attn

    def on(backend):
        def run(q, k, v):
            att._flash_attn = None  # SDPA even where flash-attn imports
            try:
                with sdpa_kernel([backend]):
                    return att.causal_attention(q, k, v)
            finally:
                att._flash_attn = flash
        return run

    kernels = {"golf_default": att.causal_attention}
    for name in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
        if hasattr(SDPBackend, name):
            kernels[f"sdpa_{name.split('_')[0].lower()}"] = on(getattr(SDPBackend, name))
    if flash is not None:
        kernels["flash_attn"] = att.causal_attention
    return kernels


def _check_kernels(c: Check, kernels: dict) -> dict:
    """Max |out - fp32 reference| of each kernel for MHA, GQA and MQA (or why it cannot run)."""
    heads, seq, hd = (8, 256, 64) if c.cuda else (4, 32, 16)
    out = {}
    for label, kv in (("MHA", heads), ("GQA", heads // 4), ("MQA", 1)):
        q, k, v = _qkv(kv, heads, seq, hd, 2, c.device, c.dtype)
        ref = _reference(q, k, v)
        for name, fn in kernels.items():
            try:
                err = (fn(q, k, v).float() - ref).abs().max().item()
                out.setdefault(name, {})[label] = {"max_err": err, "ok": err < c.atol}
            except Exception as e:  # this kernel does not take these inputs
                out.setdefault(name, {})[label] = {"unsupported": _first_line(e)}
    return out


def _time_kernels(c: Check, kernels: dict, cfg: ModelConfig, seq: int, seqs: int) -> dict:
    """ms of forward + backward of each kernel at the training shape of `cfg`."""
    q, k, v = _qkv(cfg.num_kv_heads, cfg.num_heads, seq, cfg.head_dim, seqs, c.device, c.dtype,
                   grad=True)
    grad = torch.randn_like(q)
    out = {}
    for name, fn in kernels.items():
        if name == "sdpa_math" and c.cuda:
            continue  # materialises (B, H, T, T) scores: tens of GB at the training shape
        try:
            out[name] = 1e3 * time_fn(lambda fn=fn: fn(q, k, v).backward(grad), c.device, 5)
        except Exception as e:
            out[name] = _first_line(e)
    return out


def _sdp_choice(c: Check, cfg: ModelConfig, seq: int) -> str:
    """The SDPA kernel torch picks for golf's GQA call at the training shape."""
    from torch.nn.attention import SDPBackend

    q, k, v = _qkv(cfg.num_kv_heads, cfg.num_heads, seq, cfg.head_dim, 2, c.device, c.dtype)
    t = (q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    choice = torch._fused_sdp_choice(*t, is_causal=True, enable_gqa=q.size(2) != k.size(2))
    return SDPBackend(choice).name


def _autocast_gpt(c: Check) -> dict:
    """Logits of the best model (random weights) under bf16 autocast against fp32."""
    from stages.model.gpt import build_model

    cfg = c.best.model
    net = build_model(cfg, random_state(cfg), device=c.device).eval()
    x = torch.randint(2, cfg.vocab_size, (2, 256 if c.cuda else 32), device=c.device)
    with torch.no_grad():
        ref = net(x)
        with torch.autocast(c.device.type, dtype=torch.bfloat16):
            low = net(x)
    rel = ((low.float() - ref).norm() / ref.norm()).item()
    return {"rel_err": rel, "ok": math.isfinite(rel) and rel < 5e-2, "bound": 5e-2}


def _compiled_attention(c: Check) -> dict:
    """torch.compile of causal_attention (inductor on CUDA; dynamo only on the CPU) vs eager."""
    from stages.model import attention as att

    backend = "inductor" if c.cuda else "eager"
    q, k, v = _qkv(2, 8 if c.cuda else 4, 256 if c.cuda else 32, 64 if c.cuda else 16, 2,
                   c.device, c.dtype)
    t0 = time.perf_counter()
    try:
        fn, fullgraph = torch.compile(att.causal_attention, backend=backend, fullgraph=True), True
        out = fn(q, k, v)
    except Exception:  # a graph break: compile it as torch.compile would by default
        fn, fullgraph = torch.compile(att.causal_attention, backend=backend), False
        out = fn(q, k, v)
    seconds = time.perf_counter() - t0
    err = (out.float() - att.causal_attention(q, k, v).float()).abs().max().item()
    return {"backend": backend, "fullgraph": fullgraph, "compile_s": seconds, "max_err": err,
            "ok": err < c.atol}


def _causality(c: Check) -> dict:
    from stages.model.attention import causal_attention

    q, k, v = _qkv(2, 8, 256, 64, 2, c.device, c.dtype) if c.cuda else \
        _qkv(2, 4, 32, 16, 2, c.device, c.dtype)
    cut = q.size(1) * 3 // 4
    k2, v2 = k.clone(), v.clone()
    k2[:, cut:], v2[:, cut:] = -k2[:, cut:], v2[:, cut:] * 3
    a, b = causal_attention(q, k, v).float(), causal_attention(q, k2, v2).float()
    before = (a[:, :cut] - b[:, :cut]).abs().max().item()
    after = (a[:, cut:] - b[:, cut:]).abs().max().item()
    return {"max_change_before": before, "max_change_after": after,
            "ok": before < 1e-3 and after > 0.1}


def _pytest_gpu(until: float) -> dict:
    """The GPU-marked tests of tests/model/test_attention.py, in a subprocess."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu",
           "tests/model/test_attention.py"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT),
                                                                    os.environ.get("PYTHONPATH")]))}
    try:
        done = subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=max(5.0, until - time.perf_counter()))
    except subprocess.TimeoutExpired:
        return {"returncode": None, "summary": "timed out", "ok": False}
    lines = [line for line in done.stdout.strip().splitlines() if line.strip()]
    return {"returncode": done.returncode, "summary": lines[-1] if lines else done.stderr[-300:],
            "ok": done.returncode == 0}


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:160]}"


def _part(out: dict, key: str, fn, *args):
    """out[key] = fn(*args), or the error it raised: one failing part leaves the others to run."""
    try:
        out[key] = fn(*args)
    except Exception as e:
        out[key] = {"error": _first_line(e), "ok": False}
    return out[key]


def section_attention(c: Check, until: float) -> dict:
    kernels = _attention_kernels()
    out = {"dtype": str(c.dtype).removeprefix("torch."),
           "flash_attn_installed": "flash_attn" in kernels, "accuracy": _check_kernels(c, kernels)}
    acc = out["accuracy"]
    fused = [n for n in ("sdpa_flash", "sdpa_efficient", "sdpa_cudnn") if n in acc]
    c.add_check("golf attention = fp32 reference (MHA, GQA, MQA)",
                all(r.get("ok") for r in acc["golf_default"].values()), acc["golf_default"])
    c.add_check("a fused SDPA kernel takes each head layout",
                all(any(acc[n][lay].get("ok") for n in fused) for lay in ("MHA", "GQA", "MQA")),
                {n: sorted(k for k, r in acc[n].items() if r.get("ok")) for n in fused})
    b = c.best
    seq, seqs = (b.train.seq_len, b.train.batch_tokens // N_GPUS // b.train.seq_len)
    out["training_shape"] = [seqs, seq, b.model.num_heads, b.model.num_kv_heads, b.model.head_dim]
    _part(out, "sdpa_choice", _sdp_choice, c, b.model, seq)
    _part(out, "fwd_bwd_ms", _time_kernels, c, kernels, b.model, seq, seqs)
    for key, name, fn, args in (
            ("causality", "attention is causal", _causality, (c,)),
            ("autocast_gpt", "bf16-autocast logits of the best model ~ fp32", _autocast_gpt, (c,)),
            ("compile", "compiled attention = eager", _compiled_attention, (c,)),
            ("pytest_gpu", "pytest -m gpu tests/model/test_attention.py", _pytest_gpu, (until,))):
        result = _part(out, key, fn, *args)
        c.add_check(name, bool(result.get("ok")), result)
    return out


def section_nccl(c: Check, until: float) -> dict:
    import torch.distributed as dist

    backend = "nccl" if c.cuda else "gloo"
    store = Path(c.tmp) / "nccl_store"
    t0 = time.perf_counter()
    dist.init_process_group(backend, init_method=f"file://{store}", rank=0, world_size=1)
    try:
        init_s = time.perf_counter() - t0
        x = torch.ones(64 * 2**20 // 4 if c.cuda else 1024, device=c.device)
        seconds = time_fn(lambda: dist.all_reduce(x), c.device, 5)
        ok = bool(torch.all(x == 1).item())
    finally:
        dist.destroy_process_group()
    c.add_check(f"{backend} all-reduce (1 process)", ok, {"init_s": init_s})
    return {"backend": backend, "init_s": init_s, "all_reduce_ms": 1e3 * seconds,
            "bytes": x.numel() * 4, "ok": ok}


def _run_train(c: Check, preset: Preset, params: TrainParams, until: float) -> tuple[list, bool]:
    """Seconds of each optimizer step of golf's loop (the first includes build and compile) and
    whether the time budget cut it short."""
    from stages.data.shards import load_train_tokens
    from stages.train.loop import Hooks, train

    data = random_train_dir(Path(c.tmp), preset.model.vocab_size, 64 * params.batch_tokens)
    stamps = [time.perf_counter()]

    def on_step(info) -> None:
        stamps.append(time.perf_counter())
        if stamps[-1] > until:
            raise SectionTimeout

    try:
        train(load_train_tokens(data), preset.model, params, parents={}, provenance={},
              hooks=Hooks(on_step=on_step))
    except SectionTimeout:
        return [b - a for a, b in itertools.pairwise(stamps)], True
    return [b - a for a, b in itertools.pairwise(stamps)], False


def _train(c: Check, preset: Preset, params: TrainParams, until: float, out: dict) -> list:
    """_run_train; if it fails compiled, the error goes to out["compile_error"] and the run is
    repeated eager, so that one bad compile still leaves step times."""
    try:
        steps, out["partial"] = _run_train(c, preset, params, until)
        return steps
    except Exception as e:
        if params.compile != "on" or time.perf_counter() > until - 10:
            raise
        out["compile_error"] = _first_line(e)
        out["compile"] = "off (compiled run failed)"
    torch._dynamo.reset()
    reset_memory(c.device)
    steps, out["partial"] = _run_train(c, preset, dataclasses.replace(params, compile="off"), until)
    return steps


def _phase(c: Check, steps: list[float], warmup: int, tokens: int, fpt: int) -> dict:
    """Steady-state numbers of one phase from its step times (the first one compiles). A phase
    cut short by its time budget is timed on what it has after the first step, if anything."""
    timed = steps[warmup:] or steps[1:]
    if not timed:  # only the compiling step ran: no steady state to report
        return {"steps": len(steps), "timed_steps": 0, "first_step_s": steps[0] if steps else None,
                "ms_per_step": None, "tokens_per_s": None, "mfu": None}
    step_s = statistics.median(timed)
    peak = c.report["sections"].get("peak", {}).get(f"{'bf16' if c.cuda else 'fp32'}_tflops")
    tok_s = tokens / step_s
    return {"steps": len(steps), "timed_steps": len(timed), "ms_per_step": 1e3 * step_s,
            "tokens_per_s": tok_s, "first_step_s": steps[0],
            "compile_s": max(0.0, steps[0] - step_s), "flops_per_token": fpt,
            "tflops": fpt * tok_s / 1e12, "mfu": fpt * tok_s / (peak * 1e12) if peak else None}


def train_params(c: Check, preset: Preset, steps: int, loop_at: float) -> TrainParams:
    t = preset.train
    return dataclasses.replace(
        t, batch_tokens=t.batch_tokens // N_GPUS, max_steps=steps, max_wallclock_seconds=0.0,
        schedule="steps", loop_enable_at=loop_at, grad_accum_steps=1, val_every=0,
        checkpoint_every=0, swa_every=0,
        compile=c.args.compile or ("on" if c.cuda else "off"), autocast="auto" if c.cuda else "off")


def _train_header(c: Check, preset: Preset, params: TrainParams) -> dict:
    from stages.model.gpt import count_parameters

    m = preset.model
    return {"model": f"{m.num_layers}x{m.model_dim}, vocab {m.vocab_size}",
            "parameters": count_parameters(m), "seq_len": params.seq_len,
            "tokens_per_step": params.batch_tokens, "compile": params.compile,
            "autocast": "bf16" if c.cuda else "off", "data": "uniform random token ids"}


def section_train_baseline(c: Check, until: float) -> dict:
    warmup, timed = (3, 20) if c.cuda else (1, 3)
    params = train_params(c, c.baseline, warmup + timed, 0.0)
    out = _train_header(c, c.baseline, params)
    reset_memory(c.device)
    steps = _train(c, c.baseline, params, until, out)
    fpt = flops_per_token(c.baseline.model, params.seq_len, looping=False)
    out.update(_phase(c, steps, warmup, params.batch_tokens, fpt),
               peak_mem_gib=peak_memory(c.device))
    return out


def section_train_best(c: Check, until: float) -> dict:
    warmup, timed = (3, 12) if c.cuda else (1, 3)
    per_phase = warmup + timed
    params = train_params(c, c.best, 2 * per_phase, 0.5)  # looping turns on at step per_phase
    out = _train_header(c, c.best, params)
    out["loop_enable_step"] = per_phase
    reset_memory(c.device)
    steps = _train(c, c.best, params, until, out)
    phases = {}
    for name, part, looping in (("before_looping", steps[:per_phase], False),
                                ("after_looping", steps[per_phase:], True)):
        if part:
            fpt = flops_per_token(c.best.model, params.seq_len, looping)
            phases[name] = _phase(c, part, warmup, params.batch_tokens, fpt)
    out.update(phases, peak_mem_gib=peak_memory(c.device))
    return out


def section_gptq(c: Check, until: float) -> dict:
    from stages.artifacts import Artifact, to_bytes
    from stages.codec.blob import pack
    from stages.quant.calibrate import calibrate
    from stages.quant.quantize import quantize

    p = c.best
    qp = p.quantize
    calib_tokens = qp.calib_batches * qp.calib_batch_seqs * qp.calib_seq_len
    data = random_train_dir(Path(c.tmp), p.model.vocab_size, max(4 * calib_tokens, 2**16))
    ckpt = Artifact("checkpoint", random_state(p.model), p.model)
    reset_memory(c.device)
    t0 = time.perf_counter()
    hessians, provenance = calibrate(ckpt, str(data), qp)
    sync(c.device)
    t1 = time.perf_counter()
    q = quantize(ckpt, qp, parents={}, hessians=hessians, calibration=provenance)
    sync(c.device)
    t2 = time.perf_counter()
    payload = to_bytes(q)
    blob = pack(payload, p.codec, p.codec_level)
    t3 = time.perf_counter()
    out = {"weights": "random N(0, 0.02), not trained: the times are real, the bytes are not "
                      "the shipped size",
           "method": f"{qp.method}/{qp.grid}", "bits": qp.bits, "calib_tokens": calib_tokens,
           "calib_s": t1 - t0,
           "gptq_s": t2 - t1, "compress_s": t3 - t2, "codec": p.codec,
           "quantized_tensors": sum(1 for e in q.extra["tensors"].values()
                                    if e.get("scheme") == "int_per_row"),
           "quantized_bytes": len(payload), "compressed_bytes": len(blob),
           "peak_mem_gib": peak_memory(c.device)}
    out["fisher"] = _fisher_pass(c, ckpt, data, until)
    return out


def _fisher_pass(c: Check, ckpt, data: Path, until: float) -> dict:
    """What quantize.fisher_alpha adds to calibration: its backward passes (MICRO_SEQS sequences
    each) over the preset's calibration batches, time-boxed, projected to all of them."""
    from stages.data.shards import load_train_tokens
    from stages.model.gpt import build_model
    from stages.quant.allocate import MICRO_SEQS, collect_row_fisher
    from stages.quant.calibrate import from_train_tokens

    qp = c.best.quantize
    batches = from_train_tokens(load_train_tokens(data, ckpt.model_config.vocab_size), qp).batches
    model = build_model(ckpt.model_config, ckpt.tensors, device=c.device)
    reset_memory(c.device)
    times = []
    for batch in batches:
        if times and time.perf_counter() + 1.5 * max(times) > until:
            break  # the section's budget: project from the batches done
        t0 = time.perf_counter()
        collect_row_fisher(model, [batch])
        sync(c.device)
        times.append(time.perf_counter() - t0)
    per_batch = statistics.median(times[1:] or times)  # the first pass warms the kernels up
    return {"micro_seqs": MICRO_SEQS, "batches_timed": len(times), "s_per_batch": per_batch,
            "projected_s": per_batch * len(batches), "peak_mem_gib": peak_memory(c.device)}


def _score(c: Check, model, tokens: torch.Tensor, params: EvalParams, until: float) -> dict:
    """Time-boxed score_stream: windows scored per second after the first batch."""
    from stages.eval.evaluate import count_windows, score_stream

    total = count_windows(tokens.numpy(), params)
    done, stamps = [0], []

    def on_progress(n: int) -> None:
        done[0] += n
        stamps.append((time.perf_counter(), done[0]))
        if stamps[-1][0] > until and done[0] < total:
            raise SectionTimeout

    t0 = time.perf_counter()
    try:
        score_stream(model, tokens, params, on_progress=on_progress)
        partial = False
    except SectionTimeout:
        partial = True
    sync(c.device)
    seconds = time.perf_counter() - t0
    if len(stamps) >= 2 and stamps[-1][0] > stamps[0][0]:
        rate = (stamps[-1][1] - stamps[0][1]) / (stamps[-1][0] - stamps[0][0])
    else:
        rate = done[0] / seconds
    full = total * VAL_TOKENS / (tokens.numel() - 1)
    return {"mode": params.mode, "windows": total, "windows_done": done[0], "partial": partial,
            "seconds": seconds, "windows_per_s": rate, "full_windows": full,
            "projected_s_1gpu": full / rate, "projected_s_8gpu": full / rate / N_GPUS}


def section_eval(c: Check, until: float) -> dict:
    from stages.artifacts import Artifact
    from stages.eval.evaluate import LoadedModel

    p = c.best
    state = random_state(p.model)
    model = LoadedModel(state, p.model, Artifact("checkpoint", state, p.model), {})
    mean_doc = VAL_TOKENS / VAL_DOCS if c.cuda else 100.0
    slices = {"sliding": 200_000 if c.cuda else 1_000, "ttt": 100_000 if c.cuda else 500}
    out = {"weights": "random N(0, 0.02)", "tokens": "synthetic, exponential document lengths",
           "mean_doc_tokens": mean_doc, "val_tokens": VAL_TOKENS, "gpus": N_GPUS,
           "preset_mode": p.eval.mode, "seq_len": p.eval.seq_len, "stride": p.eval.stride}
    start = time.perf_counter()
    share = {"sliding": 0.35, "ttt": 1.0}  # of the time left when the mode starts
    for mode in ("sliding", p.eval.mode if p.eval.mode != "sliding" else "chunked"):
        ids = synthetic_val(slices.get(mode, 1_500), p.model.vocab_size, mean_doc)
        tokens = torch.from_numpy(ids)
        params = dataclasses.replace(p.eval, mode=mode)
        stop = start + share.get(mode, 1.0) * (until - start)
        reset_memory(c.device)
        out[mode] = _score(c, model, tokens, params, stop)
        out[mode]["slice_tokens"] = tokens.numel() - 1
        out[mode]["peak_mem_gib"] = peak_memory(c.device)
        start = time.perf_counter()
    return out


# --------------------------------------------------------------------------------------------------
# The run: sections, deadline, budget lines, table
# --------------------------------------------------------------------------------------------------

class Check:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.dry = args.dry_run
        self.cuda = not self.dry
        self.device = torch.device("cuda" if self.cuda else "cpu")
        self.dtype = torch.bfloat16 if self.cuda else torch.float32
        self.atol = BF16_ATOL if self.cuda else 1e-4
        self.t0 = time.perf_counter()
        self.deadline = args.deadline or DEADLINE_S[self.dry]
        self.lock = threading.RLock()
        self.current: str | None = None
        self.section_t0 = self.t0
        self.finished = False
        self.tmp = tempfile.mkdtemp(prefix="golf-gpu-check-")
        self.report = {
            "dry_run": self.dry, "device": self.device.type, "gpu_results": self.cuda,
            "device_name": torch.cuda.get_device_name(0) if self.cuda else platform.processor()
            or platform.machine(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "n_gpus_projected": N_GPUS,
            "deadline_s": self.deadline, "sections": {}, "checks": [], "budget": []}
        if self.dry:
            self.report["note"] = ("DRY RUN on the CPU at toy size: no number here is a GPU "
                                   "result, and no PASS/FAIL line is a claim about the presets")
        self.baseline = load_preset("baseline", self.dry)
        self.best = load_preset("best", self.dry)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def add_check(self, name: str, ok: bool, detail) -> None:
        self.report["checks"].append({"name": name, "verdict": "PASS" if ok else "FAIL",
                                      "detail": detail})

    def budget_for(self, name: str, todo: list[str]) -> float:
        """The section's own budget, less what the sections after it need at least (half theirs)."""
        own = BUDGET_S[name][self.dry]
        later = sum(BUDGET_S[s][self.dry] for s in todo[todo.index(name) + 1:])
        return min(own, self.deadline - self.elapsed() - 0.5 * later)

    def run_section(self, name: str, fn, todo: list[str]) -> None:
        budget = self.budget_for(name, todo)
        entry = {"status": "running", "budget_s": round(budget, 1)}
        t0 = time.perf_counter()
        with self.lock:
            self.report["sections"][name] = entry
            self.current, self.section_t0 = name, t0
        try:
            if budget < 1:
                entry.update(status="skipped", error="no time left before the deadline")
                return
            if name in self.args.fail:
                raise RuntimeError(f"injected failure (--fail {name})")
            while name in self.args.hang:  # tests the watchdog
                time.sleep(1.0)
            result = fn(self, t0 + budget)
            partial = result.get("partial") or any(
                isinstance(v, dict) and v.get("partial") for v in result.values())
            entry.update(result, status="partial" if partial else "ok")
        except Exception as e:
            entry.update(status="error", error=f"{type(e).__name__}: {e}".strip()[:500],
                         traceback=traceback.format_exc()[-3000:])
        finally:
            entry["seconds"] = round(time.perf_counter() - t0, 2)
            with self.lock:
                self.current = None
            torch._dynamo.reset()
            reset_memory(self.device)
            self.write()

    def write(self) -> None:
        with self.lock:
            self.report["wall_s"] = round(self.elapsed(), 2)
            self.report["imported"] = sorted(m for m in WATCHED if m in sys.modules)
            self.args.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.args.out.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.report, indent=1, default=str) + "\n")
            tmp.replace(self.args.out)

    def finish(self, reason: str | None = None) -> None:
        """Budget lines, the JSON and the table (once, from the main thread or the watchdog)."""
        with self.lock:
            if self.finished:
                return
            self.finished = True
            if reason and self.current:
                self.report["sections"][self.current].update(
                    status="error", error=reason,
                    seconds=round(time.perf_counter() - self.section_t0, 2))
            if reason:
                self.report["stopped"] = reason
            self.report["wall_s"] = round(self.elapsed(), 2)
            self.report["budget"] = budget_lines(self.report, self.baseline, self.best)
            self.write()
            shutil.rmtree(self.tmp, ignore_errors=True)
            print_table(self.report)


def _get(report: dict, *path):
    node = report["sections"]
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node if isinstance(node, (int, float)) else None


def _line(name: str, value, bar: str, ok, unit: str = "", note: str = "") -> dict:
    verdict = "FAIL" if value is None else ("PASS" if ok(value) else "FAIL")
    if value is None:
        note = "no measurement (see the section's status)"
    return {"name": name, "value": value, "unit": unit, "bar": bar, "verdict": verdict,
            "note": note}


def _mfu(value: float | None) -> str:
    return "MFU n/a (no peak measured)" if value is None else f"MFU {value:.1%}"


def budget_lines(r: dict, baseline: Preset, best: Preset) -> list[dict]:
    """The issue's bars and each projection against its budget, PASS or FAIL."""
    base_t, best_t = baseline.train.max_wallclock_seconds, best.train.max_wallclock_seconds
    loop_at = best.train.loop_enable_at
    b_tok = _get(r, "train_baseline", "tokens_per_s")
    b_ms = _get(r, "train_baseline", "ms_per_step")
    pre = _get(r, "train_best", "before_looping", "tokens_per_s")
    post = _get(r, "train_best", "after_looping", "tokens_per_s")
    pre_ms, post_ms = (_get(r, "train_best", ph, "ms_per_step")
                       for ph in ("before_looping", "after_looping"))
    mfu = _get(r, "train_best", "before_looping", "mfu")
    best_steps = None if pre_ms is None or post_ms is None else \
        loop_at * best_t / (pre_ms / 1e3) + (1 - loop_at) * best_t / (post_ms / 1e3)
    record_best = best_t / (RECORD["best_ms"] / 1e3)
    hess = _get(r, "gptq", "calib_s")
    slide, ttt = (_get(r, "eval", m, "projected_s_8gpu") for m in ("sliding", best.eval.mode))
    ge = lambda bar: (lambda v: v >= bar)  # noqa: E731
    le = lambda bar: (lambda v: v <= bar)  # noqa: E731
    return [
        _line("baseline tokens/s per GPU", b_tok, ">= 1,500,000", ge(BAR["baseline_tok_s"]),
              "tok/s", _mfu(_get(r, "train_baseline", "mfu"))),
        _line(f"baseline steps in {base_t:.0f} s on {N_GPUS} GPUs", None if b_ms is None else
              base_t / (b_ms / 1e3), f">= {RECORD['baseline_steps']:,} (record)",
              ge(RECORD["baseline_steps"]), "steps", "no all-reduce in a 1-GPU step"),
        _line("best tokens/s per GPU before looping", pre, ">= 1,000,000",
              ge(BAR["best_tok_s_pre"]), "tok/s", _mfu(mfu)),
        _line("best tokens/s per GPU after looping", post, ">= 800,000 (record)",
              ge(BAR["best_tok_s_post"]), "tok/s",
              _mfu(_get(r, "train_best", "after_looping", "mfu"))),
        _line(f"best steps in {best_t:.0f} s on {N_GPUS} GPUs", best_steps,
              f">= {record_best:,.0f} (record)", ge(record_best), "steps",
              f"looping from {loop_at:.0%} of the time"),
        _line("GPTQ Hessians inside the training budget", hess,
              f"<= {600 - best_t:.0f} s (600 - {best_t:.0f})", le(600 - best_t), "s",
              f"record {RECORD['hessian_s']} s"),
        _line(f"eval sliding, {VAL_TOKENS / 1e6:.1f} M tokens on {N_GPUS} GPUs", slide, "<= 600 s",
              le(BAR["eval_s"]), "s"),
        _line(f"eval {best.eval.mode} (best preset), {VAL_TOKENS / 1e6:.1f} M tokens on "
              f"{N_GPUS} GPUs", ttt, "<= 600 s", le(BAR["eval_s"]), "s"),
        _line("gpu_check wall time", r.get("wall_s"), f"<= {RUN_LIMIT_S} s", le(RUN_LIMIT_S), "s",
              "the script's own; the device call adds start-up"),
    ]


def _summary(name: str, s: dict) -> str:
    if s.get("status") in ("error", "skipped"):
        return s.get("error", "")[:90]
    f = {
        "peak": lambda: f"bf16 {s['bf16_tflops']:.1f}, fp32 {s['fp32_tflops']:.2f} TFLOP/s",
        "attention": lambda: f"SDPA picks {s.get('sdpa_choice')}; fwd+bwd ms " + ", ".join(
            f"{k} {v:.2f}" for k, v in s.get("fwd_bwd_ms", {}).items() if isinstance(v, float)),
        "nccl": lambda: (f"{s['backend']} init {s['init_s']:.2f} s, all-reduce "
                         f"{s['all_reduce_ms']:.2f} ms"),
        "train_baseline": lambda: _phase_text(s),
        "train_best": lambda: " | ".join(f"{k.split('_')[0]} {_phase_text(s[k], s)}"
                                         for k in ("before_looping", "after_looping") if k in s),
        "gptq": lambda: (f"Hessians {s['calib_s']:.1f} s, GPTQ {s['gptq_s']:.1f} s, {s['codec']} "
                         f"{s['compress_s']:.1f} s; {s['quantized_bytes']:,} -> "
                         f"{s['compressed_bytes']:,} B (random weights); Fisher pass "
                         f"{s['fisher']['projected_s']:.1f} s projected"),
        "eval": lambda: " | ".join(f"{m} {s[m]['windows_per_s']:.1f} win/s -> "
                                   f"{s[m]['projected_s_8gpu']:.0f} s" for m in s
                                   if isinstance(s[m], dict) and "windows_per_s" in s[m]),
    }
    try:
        return f[name]()
    except (KeyError, TypeError, ValueError):
        return ""


def _phase_text(p: dict, s: dict | None = None) -> str:
    s = p if s is None else s  # the section, for what both phases share
    mfu = f", MFU {p['mfu']:.1%}" if p.get("mfu") is not None else ""
    mem = f", {s['peak_mem_gib']:.1f} GiB" if s.get("peak_mem_gib") is not None else ""
    eager = " (compile FAILED, eager)" if s.get("compile_error") else ""
    if p.get("ms_per_step") is None:
        return f"no steady state: {p.get('steps', 0)} step(s) in the time budget{eager}"
    return (f"{p['ms_per_step']:.1f} ms/step, {p['tokens_per_s']:,.0f} tok/s{mfu}{mem}, "
            f"compile {p['compile_s']:.1f} s{eager}")


def print_table(r: dict) -> None:
    head = f"golf gpu_check: {r['device']} ({r['device_name']}), torch {r['torch']}"
    print("\n" + head + (" -- DRY RUN (CPU, toy size): not a GPU result" if r["dry_run"] else ""))
    print(f"{'section':<15} {'status':<8} {'s':>6}  summary")
    for name, s in r["sections"].items():
        status, seconds = s.get("status", "?"), s.get("seconds", 0)
        print(f"{name:<15} {status:<8} {seconds:>6.1f}  {_summary(name, s)}")
    print(f"\n{'check':<52} verdict")
    for chk in r["checks"]:
        print(f"{chk['name']:<52} {chk['verdict']}")
    print(f"\n{'budget line':<52} {'value':>14}  {'bar':<24} verdict")
    for b in r["budget"]:
        v = "-" if b["value"] is None else f"{b['value']:,.1f}" if b["value"] < 100 else \
            f"{b['value']:,.0f}"
        print(f"{b['name']:<52} {v:>14}  {b['bar']:<24} {b['verdict']}  {b['note']}")
    print(f"wall {r.get('wall_s', 0):.1f} s; imported: {', '.join(r.get('imported', []))}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, toy size, a few steps")
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="the JSON report")
    ap.add_argument("--deadline", type=float, default=None,
                    help=f"overall seconds [{DEADLINE_S[0]}; dry run {DEADLINE_S[1]}]")
    ap.add_argument("--only", default=None, help="comma-separated sections to run [all]")
    ap.add_argument("--fail", action="append", default=[], metavar="SECTION",
                    help="make SECTION raise (tests the error path)")
    ap.add_argument("--hang", action="append", default=[], metavar="SECTION",
                    help="make SECTION hang (tests the deadline's watchdog)")
    ap.add_argument("--compile", choices=("on", "off"), default=None,
                    help="train.compile [on with CUDA, off in the dry run]")
    args = ap.parse_args(argv)
    todo = args.only.split(",") if args.only else list(SECTIONS)
    unknown = sorted(set(todo + args.fail + args.hang) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown section {unknown[0]} (known: {', '.join(SECTIONS)})")
    args.todo = [s for s in SECTIONS if s in todo]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; use --dry-run for the CPU toy run", file=sys.stderr)
        return 2
    if args.dry_run:
        torch.set_num_threads(1)  # toy shapes gain nothing from threads on a small shared CPU
    c = Check(args)

    def stop(reason: str) -> None:
        try:
            c.finish(reason)
        finally:
            os._exit(3)

    watchdog = threading.Timer(c.deadline, stop, args=("overall deadline passed",))
    watchdog.daemon = True
    watchdog.start()
    signal.signal(signal.SIGTERM, lambda *_: stop("terminated (SIGTERM)"))
    fns = {name: globals()[f"section_{name}"] for name in SECTIONS}
    for name in args.todo:
        c.run_section(name, fns[name], args.todo)
    watchdog.cancel()
    c.finish()
    statuses = [s.get("status") for s in c.report["sections"].values()]
    return 1 if "error" in statuses or "skipped" in statuses else 0


if __name__ == "__main__":
    sys.exit(main())
