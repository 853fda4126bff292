"""Periodic validation during training (`train.val_every`), with `golf eval`'s scoring.

train() never holds validation tokens: the caller builds this callback from a data directory and
passes it in. Each call copies the model's current weights into a fresh model and scores the whole
validation split in chunked windows of the training length (every target once, stages.scoring), so
the number is the same kind as `golf eval`'s. The fresh model has the model config's default
switches (no QAT fake quant; looped layers as the config builds them).

It scores weights in memory, so it needs none of eval's artifact loading: the train stage does not
depend on the quantizers or the TTT code.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import sentencepiece as spm
import torch
from torch import nn

from stages.bpb import build_byte_table
from stages.config import ModelConfig, TrainParams
from stages.data import find_tokenizer, load_val_tokens
from stages.device import resolve_device
from stages.model import build_model
from stages.scoring import Scores, model_log_probs, plan_windows, score_windows, totals

BATCH_SEQS = 16


def build_validator(data_dir: str | os.PathLike, model_config: ModelConfig,
                    params: TrainParams) -> Callable[[nn.Module], dict]:
    """A `validate(model) -> {'val_loss', 'val_bpb'}` callback over `data_dir`'s validation split."""
    table = build_byte_table(spm.SentencePieceProcessor(model_file=str(find_tokenizer(data_dir))))
    stream = load_val_tokens(data_dir).concatenated().astype(np.int64)
    tokens = torch.from_numpy(stream)
    # Windows of the training length, on the training device: the train section decides both, so
    # the train stage does not depend on the eval section.
    windows = plan_windows(stream, params.seq_len, params.seq_len, doc_isolated=False)
    device = resolve_device(params.device)

    def validate(model: nn.Module) -> dict:
        state = {n: t.detach().float().cpu() for n, t in model.state_dict().items()}
        net = build_model(model_config, state, device=device).eval()
        scores = Scores.empty(tokens.numel() - 1)
        score_windows(model_log_probs(net), tokens.to(device), windows, BATCH_SEQS, scores)
        scored = totals(scores, tokens, table)
        return {"val_loss": round(scored["val_loss"], 6), "val_bpb": round(scored["val_bpb"], 6)}

    return validate
