"""Shared tiny fixtures: real text (the embedded stdlib corpus), a small tokenizer, a tiny model.

Everything is built once per session under a temporary folder and is seeded, so the suite stays fast
and repeatable on a 2-core CPU.
"""

from __future__ import annotations

import json

import pytest
import torch

from stages import artifacts
from stages.config import ModelConfig, QuantizeParams, TokenizeParams, TrainParams
from stages.corpus import Corpus, load_corpus
from stages.data import load_train_tokens
from stages.quantize import quantize
from stages.tokenize import tokenize
from stages.train import train

TINY_VOCAB = 400
TINY_MODEL = dict(vocab_size=TINY_VOCAB, num_layers=2, model_dim=64, num_heads=4, num_kv_heads=2)
TINY_TRAIN = dict(seed=0, max_steps=30, max_wallclock_seconds=0, batch_tokens=2048, seq_len=64,
                  matrix_lr=0.02, embed_lr=0.03, scalar_lr=0.02, warmdown_frac=0.3,
                  muon_momentum_warmup_steps=10, ema_decay=0.9, log_every=5)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


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
    from stages.artifacts import sha256_file

    run = tmp_path_factory.mktemp("run")
    tok_sha = sha256_file(data_dir / "tokenizer.model")
    result = train(load_train_tokens(data_dir), ModelConfig(**TINY_MODEL), TrainParams(**TINY_TRAIN),
                   parents={"data": "sha256:test"}, provenance={"tokenizer_sha256": tok_sha})
    artifacts.save(result.final, run / "final.safetensors")
    artifacts.save(result.ema, run / "ema.safetensors")
    return run, result


@pytest.fixture(scope="session")
def tiny_final(tiny_run):
    """The tiny run's final checkpoint, loaded as `golf eval` loads a model."""
    from stages.evaluate import load_model

    run, _ = tiny_run
    return load_model(run / "final.safetensors")


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


@pytest.fixture(scope="session")
def quantized_path(tmp_path_factory, tiny_run):
    run, _ = tiny_run
    ckpt = artifacts.load(run / "final.safetensors", expect="checkpoint")
    q = quantize(ckpt, QuantizeParams(keep_float_max_numel=1024), parents={"checkpoint": "x"})
    path = tmp_path_factory.mktemp("q") / "quantized.safetensors"
    artifacts.save(q, path)
    return path
