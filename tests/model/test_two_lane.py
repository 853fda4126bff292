"""Two-lane parallel residuals as the best record computes them (its `_parallel_block` and
`_forward_hidden`), written out by hand from the module's parameters at tiny size."""

import dataclasses

import torch

from stages.model.gpt import GPT
from tests.conftest import BASE, randomise

# 4 layers, no loops: positions 0 1 save (encoder); 2 and 3 are two-lane and add skip slots 0
# (output of position 1) and 1 (output of position 0).
CFG = dataclasses.replace(BASE, skip_gates=True, parallel_residual="two_lane", parallel_start=2)


def _two_lane_by_hand(model, layer, lane0, lane1, x0):
    """lane0' = r0 lane0 + p00 a + p10 m and lane1' = r1 lane1 + p01 a + p11 m, with
    a = attention of mix0 lane0 + mix1 x0, m = MLP of lane1; the residual keeps lane0 unmixed."""
    block = model.blocks[layer]
    mix, post = block.resid_mix, model.parallel_post_lambdas[layer]  # (2, d), (source, lane)
    resid = model.parallel_resid_lambdas[layer]  # (lane,)
    a = block.attend(mix[0] * lane0 + mix[1] * x0, None)
    m = block.feed_forward(lane1)
    return (resid[0] * lane0 + post[0, 0] * a + post[1, 0] * m,
            resid[1] * lane1 + post[0, 1] * a + post[1, 1] * m)


def _skip_by_hand(model, slot, x, skip):
    g = torch.sigmoid(model.skip_gates[slot])
    return g * x + (1 - g) * model.skip_weights[slot] * skip


def test_one_two_lane_block_keeps_the_unmixed_lane0_in_its_residual():
    model = randomise(GPT(CFG), std=0.3)  # resid_mix far from [1, 0]: the mix matters
    torch.manual_seed(1)
    lane0, lane1, x0 = (torch.randn(2, 8, BASE.model_dim) for _ in range(3))
    block = model.blocks[2]
    got = block.two_lane(lane0, lane1, x0, model.parallel_post_lambdas[2],
                         model.parallel_resid_lambdas[2])
    expected = _two_lane_by_hand(model, 2, lane0, lane1, x0)
    for g, e in zip(got, expected, strict=True):
        assert torch.allclose(g, e, atol=1e-6)


def test_both_lanes_start_before_the_skip_and_only_lane0_takes_skips():
    model = randomise(GPT(CFG), std=0.3)
    idx = torch.randint(2, BASE.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x0 = model.embed(idx)
        h0 = model.blocks[0](x0, x0)
        h1 = model.blocks[1](h0, x0)
        lane0, lane1 = _skip_by_hand(model, 0, h1, h1), h1  # lane1 is the stream before the skip
        lane0, lane1 = _two_lane_by_hand(model, 2, lane0, lane1, x0)
        lane0 = _skip_by_hand(model, 1, lane0, h0)
        lane0, lane1 = _two_lane_by_hand(model, 3, lane0, lane1, x0)
        assert torch.allclose(model.hidden(idx), (lane0 + lane1) / 2, atol=1e-5)
