"""Shared tiny fixtures: real text (the embedded stdlib corpus), a small tokenizer, a tiny model.

Everything is built once per session under a temporary folder and is seeded, so the suite stays fast
and repeatable on a 2-core CPU. Training here runs in fp32 (`autocast: off`): on a CPU without bf16
units a bf16 matmul is emulated and far slower than fp32.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch

from stages import artifacts
from stages.data.corpus import Corpus, load_corpus
from stages.data.shards import load_train_tokens
from stages.data.tokenize import TokenizeParams, tokenize
from stages.model.config import ModelConfig
from stages.quant.params import QuantizeParams
from stages.quant.quantize import quantize
from stages.train.loop import train
from stages.train.params import TrainParams

ROOT = Path(__file__).resolve().parent.parent
TINY_VOCAB = 400
TINY_MODEL = dict(vocab_size=TINY_VOCAB, num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2)
TINY_TRAIN = dict(seed=0, max_steps=30, max_wallclock_seconds=0, batch_tokens=2048, seq_len=64,
                  matrix_lr=0.02, embed_lr=0.03, scalar_lr=0.02, warmdown_frac=0.3,
                  muon_momentum_warmup_steps=10, ema_decay=0.9, log_every=5, autocast="off")
# Four layers, so that looping, U-Net skips and the parallel part all have room.
BASE = ModelConfig(**{**TINY_MODEL, "num_layers": 4})
# Every switch of ModelConfig on, sized so the tiny model still has each kind of tensor: looped
# layout 0 1 2 1 2 3, two lanes from layer 3, NTK RoPE beyond 16 tokens.
EVERY_FEATURE = dataclasses.replace(
    BASE, activation="swiglu", rope_dims=8, ln_scale=True, xsa_last_n=4, skip_gates=True,
    smear_gate=True, attn_gate="sparse", ortho_init=True, bigram_buckets=64, bigram_dim=16,
    ve_layers=(2, 3), ve_dim=16, loop_start=1, loop_end=2, num_loops=1,
    parallel_residual="two_lane", parallel_start=3, rope_ntk_train_len=16)

# The tiny models gain nothing from intra-op threads, and on a 2-core machine shared with another
# busy process, OpenMP's spinning threads slow every step down many times over.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------

def randomise(model, std: float = 0.1, seed: int = 1):
    """Every parameter drawn from N(0, std): zero-initialised projections and gates would hide
    whether a path really contributes."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(std=std)
    return model


def same_weights(cfg: ModelConfig, source):
    """A GPT of `cfg` holding `source`'s tensors (skip slots trimmed to `cfg`'s count)."""
    from stages.model.gpt import GPT

    target = GPT(cfg)
    shapes = target.state_dict()
    state = {k: v[:shapes[k].size(0)] if k.startswith("skip_") else v
             for k, v in source.state_dict().items() if k in shapes}
    target.load_state_dict(state, strict=True)
    return target


def train_briefly(model, x: torch.Tensor, steps: int, lr: float = 3e-3) -> tuple[float, float]:
    """(first, last) loss of `steps` Adam steps of next-token prediction on the fixed batch x."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = model.loss(x[:, :-1], x[:, 1:])
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return losses[0], losses[-1]


def quantized_payload(tensors: dict[str, torch.Tensor], cfg: ModelConfig, **params) -> bytes:
    """The bytes of the rtn-quantized artifact of a checkpoint holding `tensors`."""
    ckpt = artifacts.Artifact("checkpoint", tensors, cfg)
    q = quantize(ckpt, QuantizeParams(**{"keep_float_max_numel": 1024, **params}), parents={})
    return artifacts.to_bytes(q)


def run_train(data_dir, *, model=None, hooks=None, resume_dir=None, resume=False, **overrides):
    """`train` on the tiny data: 8 steps of the tiny params unless overridden."""
    return train(load_train_tokens(data_dir), model or ModelConfig(**TINY_MODEL),
                 TrainParams(**{**TINY_TRAIN, "max_steps": 8, **overrides}), parents={},
                 provenance={}, hooks=hooks, resume_dir=resume_dir, resume=resume)


TRICKS = ("header", "appended", "shifted")


def tampered_data(data_dir: Path, dest: Path, trick: str) -> Path:
    """A copy of `data_dir` whose train split holds its validation tokens, hidden by `trick`: the
    validation shard with an ignored header word changed (another file hash) as an extra train
    shard, the validation tokens appended to the train shard, or val[1:] as an extra shard."""
    import numpy as np

    from stages.data.shards import read_shard, write_shard

    shutil.copytree(data_dir, dest)
    val = np.asarray(read_shard(dest / "val_000000.bin"))
    train = np.asarray(read_shard(dest / "train_000000.bin"))
    if trick == "header":
        raw = bytearray((dest / "val_000000.bin").read_bytes())
        raw[40] ^= 1  # header word 10: unused
        (dest / "train_000001.bin").write_bytes(bytes(raw))
    elif trick == "appended":
        write_shard(dest / "train_000000.bin", np.concatenate([train, val]))
    else:
        write_shard(dest / "train_000001.bin", val[1:])
    return dest


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(v, b[k]) for k, v in a.items())


_BUNDLES: dict[str, object] = {}


@pytest.fixture
def cached_bundles(monkeypatch):
    """compress and audit measure the train_gpt.py their params would ship, which takes seconds;
    in tests of something else (writes, malformed inputs) it is built once per params."""
    import importlib

    for name in ("golfcli.commands.compress", "golfcli.commands.audit"):
        module = importlib.import_module(name)
        real = getattr(module, "build_bundle", None)
        if real is None:
            continue

        def cached(*args, real=real, **kwargs):
            key = repr((args, sorted(kwargs.items())))
            if key not in _BUNDLES:
                _BUNDLES[key] = real(*args, **kwargs)
            return _BUNDLES[key]

        monkeypatch.setattr(module, "build_bundle", cached)


# --------------------------------------------------------------------------------------------------
# Session fixtures
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def stdlib_corpus() -> Corpus:
    return load_corpus("stdlib-docs")


@pytest.fixture(scope="session")
def small_docs(stdlib_corpus) -> list[str]:
    return stdlib_corpus.docs[:300]


@pytest.fixture(scope="session")
def corpus_jsonl(tmp_path_factory, small_docs):
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in small_docs), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, small_docs):
    out = tmp_path_factory.mktemp("data") / "tokens"
    tokenize(Corpus("small", small_docs), TokenizeParams(vocab_size=TINY_VOCAB), out)
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, data_dir):
    """Final and EMA checkpoints of a 30-step tiny training run, saved to disk."""
    from stages.train.inputs import train_inputs

    run = tmp_path_factory.mktemp("run")
    inputs = train_inputs(data_dir, data_dir / "tokenizer.model", ModelConfig(**TINY_MODEL))
    result = train(inputs.data, inputs.model_config, TrainParams(**TINY_TRAIN),
                   parents={"data": "sha256:test"}, provenance=inputs.provenance)
    artifacts.save(result.final, run / "final.safetensors")
    artifacts.save(result.ema, run / "ema.safetensors")
    return run, result


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_run):
    """The tiny run's final checkpoint, loaded from disk."""
    run, _ = tiny_run
    return artifacts.load(run / "final.safetensors", expect="checkpoint")


@pytest.fixture(scope="session")
def tiny_final(tiny_run):
    """The tiny run's final checkpoint, loaded as `golf eval` loads a model."""
    from stages.eval.evaluate import load_model

    run, _ = tiny_run
    return load_model(run / "final.safetensors")


@pytest.fixture(scope="session")
def quantized_path(tmp_path_factory, tiny_checkpoint):
    q = quantize(tiny_checkpoint, QuantizeParams(keep_float_max_numel=1024),
                 parents={"checkpoint": "x"})
    path = tmp_path_factory.mktemp("q") / "quantized.safetensors"
    artifacts.save(q, path)
    return path


@pytest.fixture(scope="session")
def gaussian_int6() -> bytes:
    """A 2-layer x 256 model (1.18 M quantized weights) of random Gaussian weights, int6."""
    from stages.model.gpt import GPT

    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=1024, num_layers=2, model_dim=256, num_heads=4, num_kv_heads=2)
    tensors = {k: torch.randn_like(v) * 0.02 for k, v in GPT(cfg).state_dict().items()}
    return quantized_payload(tensors, cfg, bits=6)
