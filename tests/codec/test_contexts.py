"""What a context model could save: bounds that find real structure and do not invent it."""

import numpy as np
import pytest
import torch

from stages.codec.contexts import CONTEXTS, best_context, conditional_bits, context_bits
from stages.codec.entropy import group_report, order0_bits
from stages.model.config import ModelConfig
from stages.model.gpt import GPT
from tests.conftest import quantized_payload


def _codes(scales: np.ndarray, rows: int, seed: int = 0) -> np.ndarray:
    """(rows, len(scales)) int6-range codes, column j Gaussian with std scales[j]."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(rng.standard_normal((rows, len(scales))) * scales), -31, 31)


def test_a_context_that_determines_the_code_costs_only_its_histograms():
    codes = np.tile(np.arange(-8, 8), 1000)
    context = codes + 8  # knowing the context is knowing the code
    bits = conditional_bits(codes, context)
    assert bits < 0.02 * order0_bits(codes.astype(np.int8))  # 4 bits/code without it
    assert bits > 0  # the histograms are not free


def test_one_context_is_order0_plus_one_histogram():
    codes = np.random.default_rng(1).integers(-5, 6, 10_000)
    extra = conditional_bits(codes, np.zeros_like(codes)) - order0_bits(codes.astype(np.int8))
    assert extra == pytest.approx((11 - 1) / 2 * np.log2(10_000))


def test_columns_of_different_spread_are_found_by_the_column_context():
    scales = np.repeat([0.5, 2.0, 6.0, 12.0], 64)  # 256 columns in 4 spreads
    name, bits = best_context([_codes(scales, 512)])
    per_tensor = context_bits(_codes(scales, 512))["order-0 per tensor"]
    assert name == "column scale"
    assert bits < 0.9 * per_tensor


def test_independent_codes_gain_nothing_from_any_context():
    q = _codes(np.full(256, 4.0), 512)
    bits = context_bits(q)
    assert set(bits) == set(CONTEXTS)
    assert min(bits, key=bits.get) == "order-0 per tensor"  # the others only pay for histograms


def test_no_matrices_no_context():
    assert best_context([]) == ("", 0.0)


def test_the_report_finds_a_saving_only_in_the_group_that_has_structure():
    """Gaussian weights, int6 per row; only the MLP's down projections get columns of four
    different spreads. Only their group may show a context that saves bytes."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=256, num_layers=2, model_dim=128, num_heads=4, num_kv_heads=2)
    tensors = {k: torch.randn_like(v) * 0.02 for k, v in GPT(cfg).state_dict().items()}
    for k in tensors:
        if k.endswith("mlp.proj.weight"):  # (model_dim, hidden): scale the hidden columns
            spreads = torch.tensor([0.1, 0.5, 1.0, 3.0]).repeat_interleave(tensors[k].shape[1] // 4)
            tensors[k] = tensors[k] * spreads
    r = group_report(quantized_payload(tensors, cfg, bits=6), "zstd", 3)
    rows = r["groups"]
    assert rows["mlp_down"]["context"] == "column scale"
    assert rows["mlp_down"]["context_saving_bytes"] > 0.05 * rows["mlp_down"]["bound_bytes"]
    for group, row in rows.items():
        if group != "mlp_down":
            assert row["context_saving_bytes"] < 0.002 * row["bound_bytes"], group
    assert r["codes"]["context_bound_bytes"] == pytest.approx(
        sum(row["context_bound_bytes"] for row in rows.values()), abs=1.0)
