import dataclasses

import pytest
import torch

from stages.artifacts import Artifact
from stages.model.config import ModelConfig
from stages.params import ConfigError
from stages.train.average import AverageError, AverageParams, average
from tests.conftest import TINY_MODEL

CFG = ModelConfig(**TINY_MODEL)


def _ckpt(value, cfg=CFG, shape=(2, 3)):
    return Artifact("checkpoint", {"w": torch.full(shape, float(value))}, cfg)


def test_uniform_and_weighted():
    a, b = _ckpt(1), _ckpt(4)
    uniform = average([("a", a), ("b", b)], AverageParams(), parents={})
    assert torch.allclose(uniform.tensors["w"], torch.full((2, 3), 2.5))
    weighted = average([("a", a), ("b", b)], AverageParams(weights=[3, 1]), parents={"x": "y"})
    assert torch.allclose(weighted.tensors["w"], torch.full((2, 3), 1.75))
    assert weighted.kind == "checkpoint" and weighted.parents == {"x": "y"}


def test_incompatible_checkpoints_are_refused():
    other = dataclasses.replace(CFG, num_layers=3)
    with pytest.raises(AverageError, match=r"b: model config differs from a \(model.num_layers\)"):
        average([("a", _ckpt(1)), ("b", _ckpt(1, cfg=other))], AverageParams(), parents={})
    with pytest.raises(AverageError, match="tensor names or shapes differ"):
        average([("a", _ckpt(1)), ("b", _ckpt(1, shape=(3, 2)))], AverageParams(), parents={})
    with pytest.raises(AverageError, match="2 values for 1 checkpoints"):
        average([("a", _ckpt(1))], AverageParams(weights=[1, 2]), parents={})
    quantized = Artifact("quantized", {"w": torch.zeros(1)}, CFG)
    with pytest.raises(AverageError, match="expected a checkpoint"):
        average([("a", _ckpt(1)), ("q", quantized)], AverageParams(), parents={})


def test_weights_are_checked():
    with pytest.raises(ConfigError, match="average.weights must not all be zero"):
        AverageParams(weights=[0, 0])
    with pytest.raises(ConfigError, match=r"average.weights\[1\] must be >= 0, got -1.0"):
        AverageParams(weights=[1, -1])


def test_average_records_its_inputs():
    a, b = _ckpt(1), _ckpt(3)
    a.provenance, b.provenance = {"weights": "swa:6"}, {"weights": "ema:0.9"}
    out = average([("a", a), ("b", b)], AverageParams(weights=[1, 3]), parents={})
    assert out.provenance["averaged"] == [{"weights": "swa:6", "weight": 0.25},
                                          {"weights": "ema:0.9", "weight": 0.75}]
    assert out.params["average"] == {"weights": [1.0, 3.0]}


def test_checkpoints_of_different_tokenizers_are_refused():
    """S7: the same vocabulary size is not enough: id 17 would be two different pieces."""
    a, b = _ckpt(1), _ckpt(2)
    a.provenance = {"tokenizer_sha256": "sha256:aa"}
    b.provenance = {"tokenizer_sha256": "sha256:bb"}
    with pytest.raises(AverageError, match="b was trained with tokenizer sha256:bb…, a with "
                                           "sha256:aa…"):
        average([("a", a), ("b", b)], AverageParams(), parents={})


def test_the_average_keeps_every_inputs_provenance():
    """L1: not only the first input's; what they share is kept once at the top."""
    a, b = _ckpt(1), _ckpt(3)
    a.provenance = {"tokenizer_sha256": "t", "train_documents": {"digest": "d1"}, "weights": "f"}
    b.provenance = {"tokenizer_sha256": "t", "train_documents": {"digest": "d2"}, "weights": "x"}
    out = average([("a", a), ("b", b)], AverageParams(weights=[1, 999]), parents={})
    assert out.provenance["inputs"] == [a.provenance, b.provenance]
    assert out.provenance["tokenizer_sha256"] == "t" and "train_documents" not in out.provenance


def test_weights_must_be_finite():
    """S1: average.weights=[inf, 1] made an all-NaN checkpoint."""
    with pytest.raises(ConfigError, match=r"average.weights\[0\] must be a finite number, got inf"):
        AverageParams(weights=[float("inf"), 1])
