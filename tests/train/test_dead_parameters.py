"""No dead parameters in any preset: after two optimizer steps of the real training step from init,
every trainable tensor has a non-zero gradient and has moved.

Two steps, because some tensors legitimately get a zero gradient at step 0 only: a projection whose
input starts at zero (BigramHash's, behind its zero table), or a gate behind a zero lambda
(SmearGate's). A tensor still without a gradient at the second step is a saddle like the old
zero-table/zero-projection BigramHash, which never learned. Weight decay alone would move a dead
tensor, so the gradient is checked as well as the change.

Each preset runs at 64 wide and a 400-piece vocabulary, at its own depth (its loop, lane and
value-embedding layer indices are features too), looped and plain where it loops.
"""

import dataclasses

import pytest
import torch

from golfcli.commands.params import CLASSES
from golfcli.params import load_params
from stages.data.shards import load_train_tokens
from stages.train.loop import RunState, optimizer_step, start_session
from tests.conftest import ROOT, TINY_VOCAB

PRESETS = sorted((ROOT / "configs").glob("*.yaml"))
CASES = [(p, looped) for p in PRESETS for looped in (False, True)
         if not looped or load_params(p, CLASSES)["model"].num_loops > 0]


def _reduced(path):
    params = load_params(path, CLASSES)
    model = dataclasses.replace(params["model"], vocab_size=TINY_VOCAB, model_dim=64, num_heads=4,
                                num_kv_heads=2, bigram_dim=16, ve_dim=16)
    train = dataclasses.replace(params["train"], batch_tokens=4 * 64, seq_len=64,
                                grad_accum_steps=1, autocast="off", compile="off")
    return model, train


@pytest.mark.parametrize("path, looped", CASES,
                         ids=lambda v: v.stem if hasattr(v, "stem") else ("looped" if v else ""))
def test_every_parameter_gets_a_gradient_and_moves_in_two_steps(data_dir, path, looped):
    model_cfg, params = _reduced(path)
    session = start_session(load_train_tokens(data_dir), model_cfg, params)
    session.model.set_looping(looped)  # training starts plain and loops from loop_enable_at
    start = {n: p.detach().clone() for n, p in session.model.named_parameters()}
    run = RunState()
    for _ in range(2):
        optimizer_step(session, run, params, elapsed=0.0)
    named = dict(session.model.named_parameters())
    no_grad = [n for n, p in named.items() if p.grad is None or not p.grad.abs().sum() > 0]
    unmoved = [n for n, p in named.items() if torch.equal(p.detach(), start[n])]
    assert not no_grad, f"{path.stem}: no gradient at the second step: {no_grad}"
    assert not unmoved, f"{path.stem}: unchanged after two steps: {unmoved}"
