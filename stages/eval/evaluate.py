"""`golf eval`: val_loss and val_bpb of a model over the whole validation split.

The model is always read back from disk (a checkpoint, a quantized artifact or a `.golf` blob), so the
number describes the artifact that would be shipped, not weights still in memory.

Modes (`eval.mode`; windows and their exact-once accounting in scoring.py):
- `chunked` (the baseline's): consecutive windows of `seq_len` targets, the last one shorter;
- `sliding`: a window every `eval.stride` tokens, each scoring only targets no earlier window scored,
  so every target but the first `seq_len` has at least `seq_len - stride` tokens of context;
- `ttt`: score-first test-time training over sliding windows (ttt.py).
With `eval.doc_isolated` no window spans a BOS: each document is scored with its own context only.
In every mode every target (every token after the first) is scored exactly once, which is checked;
bytes come from the tokenizer's byte table (stages/data/bpb.py), so the byte total is the same in
every mode. Quantized weights are read back with stages/quant/format.py, which imports no solver.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch

from stages.artifacts import Artifact
from stages.codec.blob import read_artifact
from stages.data.bpb import build_byte_table
from stages.data.shards import ValTokens, find_tokenizer, load_tokenizer, load_val_tokens
from stages.device import resolve_device
from stages.errors import GolfError
from stages.eval.params import EvalParams
from stages.eval.scoring import Scores, model_log_probs, plan_windows, score_windows, totals
from stages.files import sha256_file
from stages.model.config import ModelConfig
from stages.model.gpt import build_model
from stages.params import to_dict
from stages.quant.format import dequantize


@dataclass
class LoadedModel:
    state: dict[str, torch.Tensor]
    config: ModelConfig
    artifact: Artifact
    info: dict


def load_model(path: str | Path) -> LoadedModel:
    """Float weights of any model artifact: a checkpoint, a quantized artifact or a `.golf` blob."""
    read = read_artifact(path)
    art = read.artifact
    info = {"path": str(path), "file_sha256": read.file_sha256, "file_bytes": read.file_bytes,
            "kind": f"blob/{art.kind}" if read.blob else art.kind}
    if read.blob:
        info.update(blob_codec=read.blob.codec, blob_bytes=read.blob.compressed_bytes,
                    payload_sha256=read.blob.sha256)
    state = dequantize(art) if art.kind == "quantized" else {k: v.float() for k, v in art.tensors.items()}
    return LoadedModel(state, art.model_config, art, info)


def score_stream(model: LoadedModel, tokens: torch.Tensor, params: EvalParams,
                 probes: frozenset[int] = frozenset(),
                 on_progress: Callable[[int], None] | None = None) -> Scores:
    """One scoring pass of `params.mode` over a token stream (the validation split, or in the audit
    a prefix of it): per-target losses, the probes' distributions and the TTT event log.

    The network is a fresh copy built from the loaded weights, so TTT never alters `model`.
    """
    device = resolve_device(params.device)
    net = build_model(model.config, model.state, device=device).eval()
    on_device = tokens.to(device)
    scores = Scores.empty(tokens.numel() - 1)
    if params.mode == "ttt":
        from stages.eval.ttt import run_ttt  # only TTT runs need it (a bundle may lack it)
        run_ttt(net, on_device, params, scores, probes, on_progress)
    else:
        windows = plan_windows(tokens.numpy(), params.seq_len, scoring_stride(params),
                               params.doc_isolated)
        score_windows(model_log_probs(net), on_device, windows, params.batch_seqs, scores, probes,
                      on_progress)
    return scores


def scoring_stride(params: EvalParams) -> int:
    """Chunked windows are sliding windows whose stride is their length."""
    return params.seq_len if params.mode == "chunked" else params.stride


def count_windows(stream: np.ndarray, params: EvalParams) -> int:
    """How many windows a pass scores (the progress bar's total)."""
    if params.mode == "ttt":
        from stages.eval.ttt import plan_chunks
        return sum(len(c.windows) for c in plan_chunks(stream, params))
    return len(plan_windows(stream, params.seq_len, scoring_stride(params), params.doc_isolated))


def evaluate(model: LoadedModel, val: ValTokens, sp: spm.SentencePieceProcessor, params: EvalParams,
             on_progress: Callable[[int], None] | None = None,
             on_start: Callable[[int], None] | None = None) -> dict:
    """Score every validation target once; return the metrics dict (val_loss, val_bpb, counts)."""
    if not isinstance(val, ValTokens):
        raise TypeError("evaluate() scores ValTokens")
    if sp.get_piece_size() != model.config.vocab_size:
        raise GolfError(f"the model has vocab {model.config.vocab_size} but the data's tokenizer has "
                        f"{sp.get_piece_size()} pieces")
    val.check_vocab(model.config.vocab_size)
    stream = val.concatenated().astype(np.int64)
    if stream.size < 2:
        raise GolfError("the validation split has fewer than two tokens")
    tokens = torch.from_numpy(stream)
    if on_start:
        on_start(count_windows(stream, params))
    t0 = time.perf_counter()
    scores = score_stream(model, tokens, params, on_progress=on_progress)
    elapsed = time.perf_counter() - t0
    metrics = {
        **totals(scores, tokens, build_byte_table(sp)),
        "mode": params.mode,
        "seq_len": params.seq_len,
        "eval_seconds": round(elapsed, 3),
        "params": to_dict(params),
    }
    if not np.isfinite(metrics["val_loss"]):
        bad = int(np.flatnonzero(~np.isfinite(scores.nll))[0])
        raise GolfError(f"val_loss is {metrics['val_loss']}: the model's prediction of target "
                        f"{bad} is not finite")
    metrics["tokens_per_s"] = round(metrics["tokens"] / max(elapsed, 1e-9), 1)
    if params.mode == "ttt":
        metrics["ttt_chunks"] = sum(1 for e in scores.events if e[0] == "score")
        metrics["ttt_updates"] = sum(1 for e in scores.events if e[0] == "update")
    return metrics


def evaluate_path(model_path: str | Path, data_dir: str | Path, params: EvalParams,
                  on_progress: Callable[[int], None] | None = None,
                  on_start: Callable[[int], None] | None = None) -> dict:
    """Load the model and the data directory's validation split and tokenizer, then evaluate."""
    model = load_model(model_path)
    tok_path = find_tokenizer(data_dir)
    tok_sha = sha256_file(tok_path)
    trained_with = model.artifact.provenance.get("tokenizer_sha256")
    if trained_with and trained_with != tok_sha:
        raise GolfError(f"{model_path} was trained with tokenizer {str(trained_with)[:19]}… but "
                        f"{tok_path} is {tok_sha[:19]}…: scores would be meaningless")
    sp = load_tokenizer(tok_path)
    val = load_val_tokens(data_dir)
    metrics = evaluate(model, val, sp, params, on_progress, on_start)
    metrics.update(model=model.info, val_shards=list(val.shard_hashes), tokenizer_sha256=tok_sha)
    return metrics
