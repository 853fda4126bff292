"""`golf eval`: val_loss and val_bpb of a model over the whole validation split.

The model is always read back from disk (a checkpoint, a quantized artifact or a `.golf` blob), so the
number describes the artifact that would be shipped, not weights still in memory.

Mode `chunked` (the baseline's): the validation stream is cut into consecutive windows of `seq_len`
targets; every target (every token after the first) is scored exactly once, the last window being
shorter when the count does not divide. Bytes come from the tokenizer's byte table (stages.bpb).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch

from stages.artifacts import Artifact, sha256_file
from stages.bpb import bits_per_byte, build_byte_table, target_bytes
from stages.compress import read_artifact
from stages.config import EvalParams, ModelConfig, to_dict
from stages.data import ValTokens, find_tokenizer, load_val_tokens
from stages.device import resolve_device
from stages.errors import GolfError
from stages.model import build_model
from stages.quantize import dequantize


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


def evaluate(model: LoadedModel, val: ValTokens, sp: spm.SentencePieceProcessor, params: EvalParams,
             on_progress: Callable[[int], None] | None = None) -> dict:
    """Score every validation target once; return the metrics dict (val_loss, val_bpb, counts)."""
    if not isinstance(val, ValTokens):
        raise TypeError("evaluate() scores ValTokens")
    if sp.get_piece_size() != model.config.vocab_size:
        raise GolfError(f"the model has vocab {model.config.vocab_size} but the data's tokenizer has "
                        f"{sp.get_piece_size()} pieces")
    device = resolve_device(params.device)
    net = build_model(model.config, model.state, device=device).eval()
    table = build_byte_table(sp)
    tokens = torch.from_numpy(val.concatenated().astype(np.int64))
    n_targets = tokens.numel() - 1
    if n_targets < 1:
        raise GolfError("the validation split has fewer than two tokens")
    L = params.seq_len
    starts = list(range(0, n_targets, L))
    nll_sum, byte_sum, scored = 0.0, 0, 0
    t0 = time.perf_counter()
    use_bf16 = device.type == "cuda"
    with torch.inference_mode():
        for i in range(0, len(starts), params.batch_seqs):
            group = starts[i:i + params.batch_seqs]
            # Windows of one batch share a length; only the very last window can be shorter.
            for length in sorted({min(L, n_targets - s) for s in group}, reverse=True):
                ss = [s for s in group if min(L, n_targets - s) == length]
                x = torch.stack([tokens[s:s + length] for s in ss]).to(device)
                y = torch.stack([tokens[s + 1:s + 1 + length] for s in ss]).to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    nll = net.token_nll(x, y)
                nll_sum += nll.double().sum().item()
                byte_sum += int(target_bytes(x, y, table).sum())
                scored += y.numel()
            if on_progress:
                on_progress(len(group))
    elapsed = time.perf_counter() - t0
    assert scored == n_targets, "every validation target must be scored exactly once"
    if byte_sum <= 0:
        raise GolfError("the validation targets carry no bytes; is the tokenizer right?")
    val_loss = nll_sum / scored
    return {
        "val_loss": val_loss,
        "val_bpb": bits_per_byte(nll_sum, byte_sum),
        "tokens": scored,
        "bytes": byte_sum,
        "mode": params.mode,
        "seq_len": L,
        "eval_seconds": round(elapsed, 3),
        "tokens_per_s": round(scored / max(elapsed, 1e-9), 1),
        "params": to_dict(params),
    }


def evaluate_path(model_path: str | Path, data_dir: str | Path, params: EvalParams,
                  on_progress: Callable[[int], None] | None = None,
                  on_start: Callable[[int], None] | None = None) -> dict:
    """Load the model and the data directory's validation split and tokenizer, then evaluate."""
    model = load_model(model_path)
    tok_path = find_tokenizer(data_dir)
    tok_sha = sha256_file(tok_path)
    trained_with = model.artifact.provenance.get("tokenizer_sha256")
    if trained_with and trained_with != tok_sha:
        raise GolfError(f"{model_path} was trained with tokenizer {trained_with[:19]}… but "
                        f"{tok_path} is {tok_sha[:19]}…: scores would be meaningless")
    sp = spm.SentencePieceProcessor(model_file=str(tok_path))
    val = load_val_tokens(data_dir)
    if on_start:
        on_start(math.ceil((val.num_tokens - 1) / params.seq_len))
    metrics = evaluate(model, val, sp, params, on_progress)
    metrics.update(model=model.info, val_shards=list(val.shard_hashes), tokenizer_sha256=tok_sha)
    return metrics
