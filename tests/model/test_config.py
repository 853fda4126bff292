"""`ModelConfig`: checked values, the vocabulary from the tokenizer, the renamed attention-gate
keys, and artifact format 1's metadata layout in both directions."""

import dataclasses

import pytest

from stages.errors import GolfError
from stages.model.config import ModelConfig
from stages.model.gpt import GPT
from stages.params import ConfigError, build
from tests.conftest import BASE, EVERY_FEATURE


@pytest.mark.parametrize("values, message", [
    ({"activation": "gelu"},
     "model.activation must be one of relu2, leaky_relu2, swiglu; got 'gelu'"),
    ({"attn_gate": "both"}, "model.attn_gate must be one of none, out, sparse; got 'both'"),
    ({"attn_gate_scale": 0}, "model.attn_gate_scale must be > 0, got 0.0"),
    ({"rope_dims": 7}, "model.rope_dims must be even"),
    ({"xsa_last_n": 12}, "model.xsa_last_n must be in [0, 9], got 12"),
    ({"bigram_buckets": 1}, "model.bigram_buckets must be 0 (off) or >= 2"),
    ({"ve_layers": [9]}, "model.ve_layers must be distinct layer indices"),
    ({"ve_layers": [1, 1]}, "model.ve_layers must be distinct layer indices"),
    ({"loop_start": 5, "loop_end": 4, "num_loops": 1}, "model.loop_start/loop_end"),
    ({"num_loops": -1}, "model.num_loops must be >= 0, got -1"),
    ({"parallel_residual": "lanes"}, "model.parallel_residual must be one of"),
    ({"parallel_start": 9}, "model.parallel_start must be in [0, 8]"),
    ({"rope_ntk_train_len": 64, "rope_dims": 2}, "rotated dims"),
    ({"num_layers": 0}, "model.num_layers must be >= 1, got 0"),
    ({"vocab_size": 70000}, "model.vocab_size must be in [1, 65536], got 70000"),
])
def test_bad_values_are_one_line_errors_naming_the_key(values, message):
    with pytest.raises(ConfigError) as e:
        build(ModelConfig, values)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("old, new", [("attn_out_gate", "set model.attn_gate: out"),
                                      ("sparse_attn_gate", "set model.attn_gate: sparse"),
                                      ("sparse_attn_gate_scale", "set model.attn_gate_scale")])
def test_renamed_keys_say_what_to_write_instead(old, new):
    with pytest.raises(ConfigError) as e:
        build(ModelConfig, {old: True})
    assert str(e.value) == f"model.{old} is gone: {new}"


def test_the_vocabulary_comes_from_the_tokenizer():
    cfg = ModelConfig()
    assert cfg.vocab_size is None
    with pytest.raises(GolfError, match="model.vocab_size is not set"):
        GPT(cfg)
    assert cfg.with_vocab(1024, "t.model").vocab_size == 1024
    assert ModelConfig(vocab_size=1024).with_vocab(1024, "t.model").vocab_size == 1024
    with pytest.raises(ConfigError, match="model.vocab_size is 512 but t.model has 1024 pieces"):
        ModelConfig(vocab_size=512).with_vocab(1024, "t.model")


@pytest.mark.parametrize("gate", ["none", "out", "sparse"])
def test_metadata_round_trips_every_attention_gate(gate):
    for base in (BASE, EVERY_FEATURE):
        cfg = dataclasses.replace(base, attn_gate=gate, attn_gate_scale=0.25)
        meta = cfg.to_metadata()
        assert "attn_gate" not in meta and "attn_gate_scale" not in meta  # format 1's layout
        assert meta["attn_out_gate"] == (gate == "out")
        assert meta["sparse_attn_gate"] == (gate == "sparse")
        assert ModelConfig.from_metadata(meta) == cfg


def test_old_layout_metadata_still_loads():
    old = {k: v for k, v in BASE.to_metadata().items()}
    old.update(attn_out_gate=True, sparse_attn_gate=False, sparse_attn_gate_scale=0.5)
    assert ModelConfig.from_metadata(old).attn_gate == "out"
    old.update(attn_out_gate=False, sparse_attn_gate=True, sparse_attn_gate_scale=0.3)
    cfg = ModelConfig.from_metadata(old)
    assert (cfg.attn_gate, cfg.attn_gate_scale) == ("sparse", 0.3)
    minimal = ModelConfig.from_metadata({"vocab_size": 64, "num_layers": 2})  # the rest: defaults
    assert minimal.attn_gate == "none" and minimal.num_layers == 2


def test_smear_gate_style_is_stored_only_when_it_is_not_the_default():
    """So the metadata (and bytes) of every artifact of a config without the blend SmearGate are
    what they were before the key existed."""
    assert "smear_gate_style" not in EVERY_FEATURE.to_metadata()
    blend = dataclasses.replace(EVERY_FEATURE, smear_gate_style="blend")
    assert blend.to_metadata()["smear_gate_style"] == "blend"
    assert ModelConfig.from_metadata(blend.to_metadata()) == blend
    assert ModelConfig.from_metadata(EVERY_FEATURE.to_metadata()) == EVERY_FEATURE
