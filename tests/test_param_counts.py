"""Parameter counts of the record stacks (spec §0, §2.2, §9), built on the meta device.

The dicts are the `model:` sections of those stacks; the counts pin the details that decide them
(skip slots of the looped layout, per-physical-layer lane lambdas, gate shapes).
"""

import pytest

from stages.config import ModelConfig
from stages.model import count_parameters

# 03-22 GPTQ-lite stack: 11 x 512, MLP 3x relu^2, BigramHash 2048 x 128, VE128 on layers 9 and 10,
# SmearGate, XSA on the last 4 layers, partial RoPE 16/64 with LN scale.
GPTQL = dict(vocab_size=1024, num_layers=11, model_dim=512, num_heads=8, num_kv_heads=4,
             mlp_mult=3, rope_dims=16, ln_scale=True, xsa_last_n=4, smear_gate=True,
             bigram_buckets=2048, bigram_dim=128, ve_layers=[9, 10], ve_dim=128)

# 04-05 SP8192 stack: MLP 4x LeakyReLU(0.5)^2, q_gain 4.0, XSA on all 11, gated skips,
# layers 4-5 looped (num_loops 2: three passes, 15 virtual layers, 7 skip slots).
SP8K = dict(vocab_size=8192, num_layers=11, model_dim=512, num_heads=8, num_kv_heads=4,
            mlp_mult=4, activation="leaky_relu2", rope_dims=16, ln_scale=True, qk_gain_init=4.0,
            xsa_last_n=11, skip_gates=True, loop_start=4, loop_end=5, num_loops=2)

# 04-27 best record: SP8K's shape with q_gain 5.0, layers 3-5 looped (17 virtual layers, 8 skip
# slots), two-lane parallel residuals from layer 8 (lambdas for all 11 physical layers), the
# sparse attention gate and the BOS-masked SmearGate.
BEST = dict(vocab_size=8192, num_layers=11, model_dim=512, num_heads=8, num_kv_heads=4,
            mlp_mult=4, activation="leaky_relu2", rope_dims=16, ln_scale=True, qk_gain_init=5.0,
            xsa_last_n=11, skip_gates=True, loop_start=3, loop_end=5, num_loops=2,
            parallel_residual="two_lane", parallel_start=8, sparse_attn_gate=True,
            sparse_attn_gate_scale=0.5, smear_gate=True)


@pytest.mark.parametrize("name, config, expected", [
    ("baseline", {}, 17_059_912),  # spec §2.1, exact
    ("GPTQL", GPTQL, 26_993_257),  # spec: 26.99 M
    ("SP8K", SP8K, 35_943_512),  # spec: 35.94 M
    ("BEST", BEST, 35_945_671),  # spec §0: 35,945,671, exact
])
def test_parameter_counts_of_the_record_stacks(name, config, expected):
    assert count_parameters(ModelConfig(**config)) == expected, name


def test_best_count_breaks_down_as_the_spec_says():
    """Where BEST's count comes from: base matrices and per-layer controls, plus 8 gated skip
    slots, 11 x 6 lane lambdas, the 12 + 1 smear parameters and 11 x 8 x 12 gate weights."""
    no_extras = dict(BEST, skip_gates=False, num_loops=0, parallel_residual="none",
                     sparse_attn_gate=False, smear_gate=False)
    base = count_parameters(ModelConfig(**no_extras))  # 5 plain skip slots
    assert count_parameters(ModelConfig(**BEST)) - base == (
        (8 - 5) * 512 + 8 * 512 + 11 * 6 + 13 + 11 * 8 * 12)
