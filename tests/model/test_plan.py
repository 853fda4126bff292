"""The layer plan (depth recurrence, U-Net skips, parallel lanes) and the GPT that walks it."""

import dataclasses

import pytest
import torch

from golfcli.params import load_params
from stages.model.config import ModelConfig
from stages.model.gpt import GPT
from stages.model.plan import format_plan, layer_plan, num_skip_slots
from tests.conftest import BASE, EVERY_FEATURE, ROOT, randomise, same_weights

PRESETS = sorted((ROOT / "configs").glob("*.yaml"))


def _preset(name: str) -> ModelConfig:
    return load_params(ROOT / "configs" / f"{name}.yaml", {"model": ModelConfig})["model"]


def test_the_best_presets_looped_layout():
    cfg = _preset("best")
    plan = layer_plan(cfg, looping=True)
    assert plan.looping
    assert plan.layers == (0, 1, 2) + (3, 4, 5) * 3 + (6, 7, 8, 9, 10)
    assert num_skip_slots(plan.layers) == 8  # 17 positions: 8 encoder, 9 decoder
    assert layer_plan(cfg, looping=False).layers == tuple(range(11))
    sp8k = layer_plan(_preset("pr1423"), looping=True).layers  # layers 4-5 looped twice more
    assert sp8k == (0, 1, 2, 3) + (4, 5) * 3 + (6, 7, 8, 9, 10)


@pytest.mark.parametrize("cfg", [*(_preset(p.stem) for p in PRESETS), BASE, EVERY_FEATURE],
                         ids=[*(p.stem for p in PRESETS), "base", "every_feature"])
@pytest.mark.parametrize("looping", [True, False], ids=["looped", "plain"])
def test_skips_pair_last_in_first_out(cfg, looping):
    """Decoder position encoder + j adds the output of position encoder - 1 - j: a stack of the
    encoder's outputs, popped one per decoder position while any are left, slot j for the j-th."""
    plan = layer_plan(cfg, looping)
    encoder = len(plan.steps) // 2
    stack, used_slots = [], []
    for step in plan.steps:
        if step.skip_from is not None:
            assert step.skip_from == stack.pop() == encoder - 1 - (step.position - encoder)
            used_slots.append(step.skip_slot)
        if step.saves:
            stack.append(step.position)
    assert [s.position for s in plan.steps if s.saves] == list(range(encoder))
    assert used_slots == list(range(num_skip_slots(plan.layers)))
    assert stack == []  # every saved output is added back exactly once
    with torch.device("meta"):  # the model holds the looped plan's slots; the plain plan, a prefix
        assert GPT(cfg).skip_weights.size(0) >= len(used_slots)


def test_parallel_mode_starts_at_the_first_position_whose_layer_reaches_parallel_start():
    best = layer_plan(_preset("best"), looping=True)
    first = next(s.position for s in best.steps if s.layer >= 8)
    assert [s.mode for s in best.steps] == ["sequential"] * first + ["two_lane"] * (17 - first)
    # Where the loop crosses parallel_start, the repeated lower layers stay parallel.
    cfg = ModelConfig(vocab_size=8, num_layers=6, model_dim=8, num_heads=2, num_kv_heads=1,
                      loop_start=1, loop_end=3, num_loops=1, parallel_residual="gptj",
                      parallel_start=3)
    plan = layer_plan(cfg, looping=True)
    assert plan.layers == (0, 1, 2, 3, 1, 2, 3, 4, 5)
    assert [s.mode for s in plan.steps] == ["sequential"] * 3 + ["gptj"] * 6
    assert {s.mode for s in layer_plan(dataclasses.replace(cfg, parallel_residual="none"),
                                       looping=True).steps} == {"sequential"}


def test_plain_plan_when_looping_is_off():
    for cfg in (BASE, dataclasses.replace(EVERY_FEATURE, num_loops=0)):
        plan = layer_plan(cfg, looping=True)  # nothing to loop: the plain plan
        assert not plan.looping and plan.layers == tuple(range(cfg.num_layers))
        assert not GPT(cfg).looping
    plain = layer_plan(EVERY_FEATURE, looping=False)
    assert not plain.looping and plain.layers == (0, 1, 2, 3)
    lines = format_plan(plain)
    assert len(lines) == 4 and "save" in lines[0] and "+ skip 0 (output of position 1)" in lines[2]


def test_looping_shares_weights_and_switches_at_run_time():
    cfg = dataclasses.replace(BASE, loop_start=1, loop_end=2, num_loops=2, skip_gates=True)
    model = randomise(GPT(cfg))
    assert model.looping and model.plan.layers == (0, 1, 2, 1, 2, 1, 2, 3)  # a new model loops
    assert model.skip_weights.shape[0] == 4 and len(model.blocks) == 4
    idx = torch.randint(2, BASE.vocab_size, (1, 12))
    looped = model(idx)
    model.set_looping(False)
    plain = same_weights(dataclasses.replace(cfg, num_loops=0), model)
    assert torch.equal(model(idx), plain(idx))  # the plain layout is the unlooped model
    assert not torch.allclose(model(idx), looped, atol=1e-3)
    model.set_looping(True)
    assert torch.equal(model(idx), looped)


def test_gptj_parallel_blocks_read_one_input():
    cfg = dataclasses.replace(BASE, parallel_residual="gptj", parallel_start=2)
    model = randomise(GPT(cfg))
    assert [s.mode for s in model.plan.steps] == ["sequential"] * 2 + ["gptj"] * 2
    block, x, x0 = model.blocks[2], torch.randn(1, 6, 64), torch.randn(1, 6, 64)
    mixed = block.mix(x, x0)
    expected = mixed + block.attend(mixed, None) + block.feed_forward(mixed)
    assert torch.allclose(block.parallel(x, x0), expected, atol=1e-6)
    sequential = same_weights(BASE, model)
    idx = torch.randint(2, BASE.vocab_size, (1, 10))
    assert not torch.allclose(model(idx), sequential(idx), atol=1e-3)


def test_two_lanes_with_unit_routing_are_gptj():
    """Lanes that keep themselves and take both outputs (and an identity resid mix) never differ,
    so the two-lane model reduces to the GPT-J one: a check of the lane bookkeeping and the mean."""
    two = GPT(dataclasses.replace(BASE, parallel_residual="two_lane", parallel_start=2))
    post, resid = two.parallel_post_lambdas, two.parallel_resid_lambdas
    assert post.shape == (4, 2, 2) and resid.shape == (4, 2)
    assert torch.all(resid == 1.1) and torch.all(post == 1)
    randomise(two)
    with torch.no_grad():
        two.parallel_post_lambdas.fill_(1.0)
        two.parallel_resid_lambdas.fill_(1.0)
        two.skip_weights.zero_()  # decoder skips go to lane0 only, which would split the lanes
        for block in two.blocks[2:]:
            block.resid_mix.copy_(torch.stack([torch.ones(64), torch.zeros(64)]))
    gptj = same_weights(dataclasses.replace(BASE, parallel_residual="gptj", parallel_start=2), two)
    idx = torch.randint(2, BASE.vocab_size, (1, 10))
    assert torch.allclose(two(idx), gptj(idx), atol=1e-5)
    with torch.no_grad():  # asymmetric routing separates the lanes
        two.parallel_post_lambdas[:, 1, 0] = 0.0
    assert not torch.allclose(two(idx), gptj(idx), atol=1e-3)
