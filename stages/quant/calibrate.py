"""Calibration for Hessian-aware quantization: where the inputs come from, and X^T X per layer.

Calibration tokens come from exactly two places, and never from validation data:
- `from_train_tokens`: seeded random windows of the train shards (a `TrainTokens`, which can only be
  built from train shards; a `ValTokens` is refused);
- `self_generated`: text sampled from the model itself (seeded, with a temperature), which reads no
  data at all.
Each records its provenance (shard hashes and, by content, the train documents; or the generation
seed), and the quantized artifact keeps it. A data folder whose train documents meet its validation
documents is refused, whatever files hold them (stages/data/documents.py).

Hessians are the mean X^T X of each linear layer's inputs, gathered with forward hooks (removed in a
`finally`). The tied embedding also serves as the output head, so its "input" is the final norm's
output: GPTQ on the embedding uses that Hessian (the "GPTQ embeddings" of PR #1019's lineage).
Other lookup tables (role `table`: BigramHash, value embeddings) have no input activations: they
get the identity, under which GPTQ rounds each entry to nearest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from stages.artifacts import Artifact
from stages.data.documents import train_documents
from stages.data.shards import BOS_ID, ShardError, TrainTokens, WindowSampler, load_train_tokens
from stages.device import resolve_device
from stages.model.gpt import GPT, build_model
from stages.quant.params import QuantizeParams


@dataclass(frozen=True)
class Calibration:
    batches: list[torch.Tensor]  # each (B, T) int64 token ids
    provenance: dict = field(default_factory=dict)


def from_train_tokens(data: TrainTokens, params: QuantizeParams) -> Calibration:
    """`calib_batches` batches of random train windows (validation tokens are refused)."""
    if not isinstance(data, TrainTokens):
        raise TypeError("calibration reads TrainTokens only; validation data is never used")
    sampler = WindowSampler(data, params.calib_seq_len, params.calib_seed)
    batches = [sampler.sample(params.calib_batch_seqs)[0] for _ in range(params.calib_batches)]
    return Calibration(batches, {
        "source": "train_shards", "shards": list(data.shard_hashes), "seed": params.calib_seed,
        "batches": params.calib_batches, "batch_seqs": params.calib_batch_seqs,
        "seq_len": params.calib_seq_len})


@torch.no_grad()
def self_generated(model: GPT, params: QuantizeParams,
                   on_progress: Callable[[int], None] | None = None) -> Calibration:
    """Sequences sampled from the model itself, each starting from BOS like a document."""
    gen = torch.Generator().manual_seed(params.calib_seed)  # CPU sampling: same text on any device
    model.eval()
    device = next(model.parameters()).device
    batches = []
    for _ in range(params.calib_batches):
        seq = torch.full((params.calib_batch_seqs, 1), BOS_ID, dtype=torch.long)
        for _ in range(params.calib_seq_len - 1):
            logits = model(seq.to(device))[:, -1, :].float().cpu() / params.calib_temperature
            nxt = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=gen)
            seq = torch.cat([seq, nxt], dim=1)
        batches.append(seq)
        if on_progress:
            on_progress(1)
    return Calibration(batches, {
        "source": "self", "seed": params.calib_seed, "temperature": params.calib_temperature,
        "batches": params.calib_batches, "batch_seqs": params.calib_batch_seqs,
        "seq_len": params.calib_seq_len})


def _accumulate(store: dict, counts: dict, name: str) -> Callable[[torch.Tensor], None]:
    """Adds X^T X of a layer input X (..., features) to `store[name]`."""
    def add(x: torch.Tensor) -> None:
        x = x.detach().float().reshape(-1, x.size(-1))
        store[name] = store.get(name, 0) + x.T @ x
        counts[name] = counts.get(name, 0) + x.size(0)
    return add


@torch.no_grad()
def collect_hessians(model: GPT, calib: Calibration,
                     on_progress: Callable[[int], None] | None = None) -> dict[str, torch.Tensor]:
    """Mean X^T X of the input of every linear weight, keyed by the weight's tensor name."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    handles = []
    try:
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear):  # a linear layer's input
                add = _accumulate(sums, counts, f"{name}.weight")
                handles.append(module.register_forward_hook(lambda m, i, o, add=add: add(i[0])))
        add = _accumulate(sums, counts, model.HEAD_WEIGHT)  # the tied head's input: final norm's output
        handles.append(model.final_norm.register_forward_hook(lambda m, i, o, add=add: add(o)))
        model.eval()
        device = next(model.parameters()).device
        for batch in calib.batches:
            model(batch.to(device))
            if on_progress:
                on_progress(1)
    finally:
        for handle in handles:
            handle.remove()
    hessians = {name: (sums[name] / counts[name]).cpu() for name in sums}
    params = dict(model.named_parameters())
    for name, role in model.roles_by_name().items():
        if role.kind == "table" and name not in hessians:  # no input activations: the identity
            hessians[name] = torch.eye(params[name].size(1))
    return hessians


def calibrate(checkpoint: Artifact, source: str, params: QuantizeParams,
              on_progress: Callable[[int], None] | None = None
              ) -> tuple[dict[str, torch.Tensor], dict]:
    """Hessians of `checkpoint`'s layers on calibration tokens from `source`.

    Args:
        checkpoint: the float checkpoint artifact to be quantized.
        source: 'self' (sample from the model) or a data directory, of which only the train shards
            are read; a path to a file (such as a validation shard) is refused.
        params: the `quantize` section (calibration sizes and seed).
        on_progress: called with 1 per calibration batch forwarded (and per batch generated with
            'self'): `calibration_steps` in all.

    Returns:
        The Hessians by weight name (with `quantize.fisher_alpha`, each matrix's row Fisher
        too: stages/quant/allocate.py), and the calibration's provenance.
    """
    model = build_model(checkpoint.model_config, checkpoint.tensors,
                        device=resolve_device(params.device))
    if source == "self":
        calib = self_generated(model, params, on_progress)
    else:
        path = Path(source)
        if not path.is_dir():
            raise ShardError(f"--calib takes a data directory (only its train shards are read) or "
                             f"'self'; got {source}")
        train = load_train_tokens(path, checkpoint.model_config.vocab_size)
        documents = train_documents(path, train)  # refuses validation documents
        calib = from_train_tokens(train, params)
        calib.provenance["documents"] = documents
    stats = collect_hessians(model, calib, on_progress)
    if params.fisher_alpha > 0:  # only runs that allocate steps (a bundle may lack allocate.py)
        from stages.quant.allocate import collect_row_fisher
        stats.update(collect_row_fisher(model, calib.batches, on_progress))
    return stats, calib.provenance


def calibration_steps(source: str, params: QuantizeParams) -> int:
    """How many times `calibrate` calls on_progress."""
    # a forward pass per batch, and a generation pass (self) and a backward pass (fisher_alpha)
    return params.calib_batches * (1 + (source == "self") + (params.fisher_alpha > 0))
