"""The presets under configs/: full-scale record stacks that load with the params schema, split over
8 GPUs, and build and train (forward and backward) with every switch they set."""

import dataclasses

import pytest
import torch
import yaml

from golfcli.commands.params import CLASSES
from golfcli.params import load_params
from stages.model.gpt import build_model, count_parameters
from stages.model.plan import num_skip_slots, virtual_layers
from stages.train import distributed
from tests.conftest import ROOT

PRESETS = sorted((ROOT / "configs").glob("*.yaml"))


def _load(path):
    return load_params(path, CLASSES)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_loads_with_the_params_schema(path):
    raw = yaml.safe_load(path.read_text())
    assert set(raw) == set(CLASSES), "a preset sets every section"
    p = _load(path)  # unknown keys and bad values raise
    assert p["tokenize"].vocab_size == p["model"].vocab_size
    distributed.check_world_size(p["train"], 8)  # the batch splits over 8 GPUs


def test_the_baseline_preset_is_the_public_baselines_model():
    cfg = _load(ROOT / "configs" / "baseline.yaml")["model"]
    assert count_parameters(cfg) == 17_059_912  # as the public baseline's training log states


def test_best_preset_count_is_the_plain_model_plus_its_extras():
    """Where the best stack's parameters come from: the plain model's, plus the skip slots the
    looped layout adds, one gate per slot, 2 x 2 + 2 lane lambdas per physical layer, the 12 + 1
    SmearGate parameters and a 12-input gate per head of every layer."""
    best = _load(ROOT / "configs" / "best.yaml")["model"]
    plain = dataclasses.replace(best, skip_gates=False, num_loops=0, parallel_residual="none",
                                attn_gate="none", smear_gate=False)
    looped_slots = num_skip_slots(virtual_layers(best, looping=True))
    plain_slots = num_skip_slots(virtual_layers(plain))
    d, layers, heads = best.model_dim, best.num_layers, best.num_heads
    assert count_parameters(best) - count_parameters(plain) == (
        (looped_slots - plain_slots) * d + looped_slots * d + layers * 6 + 13 + layers * heads * 12)


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_model_runs_at_reduced_width(path):
    """Every switch of the stack together, forward and backward, at 64 wide on the CPU."""
    cfg = dataclasses.replace(_load(path)["model"], vocab_size=512, model_dim=64, num_heads=4,
                              num_kv_heads=2, bigram_dim=8, ve_dim=8)
    torch.manual_seed(0)
    model = build_model(cfg)
    idx = torch.randint(0, 512, (2, 32))
    idx[:, 0] = 1  # BOS
    loss = model.loss(idx[:, :-1], idx[:, 1:])
    loss.backward()
    assert torch.isfinite(loss)
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused, f"parameters outside the graph: {unused}"
