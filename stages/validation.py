"""Periodic validation during training (`train.val_every`), built on `golf eval`'s scoring.

train() never holds validation tokens: the caller builds this callback from a data directory and
passes it in. Each call copies the model's current weights into a fresh model and scores the whole
validation split with stages.evaluate (chunked, every target once), so the number is the same kind
as `golf eval`'s. The fresh model has the model config's default switches (no QAT fake quant; looped
layers as the config builds them).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import sentencepiece as spm
from torch import nn

from stages.config import EvalParams, ModelConfig, TrainParams
from stages.data import find_tokenizer, load_val_tokens
from stages.evaluate import LoadedModel, evaluate


def build_validator(data_dir: str | os.PathLike, model_config: ModelConfig,
                    params: TrainParams) -> Callable[[nn.Module], dict]:
    """A `validate(model) -> {'val_loss', 'val_bpb'}` callback over `data_dir`'s validation split."""
    sp = spm.SentencePieceProcessor(model_file=str(find_tokenizer(data_dir)))
    val = load_val_tokens(data_dir)
    # Windows of the training length, on the training device: the train section decides both, so
    # the train stage does not depend on the eval section.
    eval_params = EvalParams(seq_len=params.seq_len, device=params.device)

    def validate(model: nn.Module) -> dict:
        state = {n: t.detach().float().cpu() for n, t in model.state_dict().items()}
        scored = evaluate(LoadedModel(state, model_config, artifact=None, info={}), val, sp,
                          eval_params)
        return {"val_loss": round(scored["val_loss"], 6), "val_bpb": round(scored["val_bpb"], 6)}

    return validate
