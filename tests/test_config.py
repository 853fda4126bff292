import pytest

from golfcli.params import load_params, parse_override
from stages.config import ConfigError, ModelConfig, TrainParams, build_section


def test_sections_build_from_plain_values():
    train = build_section("train", {"max_steps": 5, "warmdown_frac": 0})
    assert train.max_steps == 5 and train.warmdown_frac == 0.0 and isinstance(train.warmdown_frac, float)


@pytest.mark.parametrize("section, values, needle", [
    ("train", {"max_stepz": 3}, "unknown key train.max_stepz"),
    ("train", {"max_steps": "many"}, "train.max_steps must be an integer"),
    ("train", {"max_steps": True}, "train.max_steps must be an integer"),
    ("train", {"warmdown_frac": 1.3}, "train.warmdown_frac must be in [0, 1], got 1.3"),
    ("model", {"model_dim": 100, "num_heads": 3}, "model.model_dim (100) must be divisible"),
    ("quantize", {"bits": 9}, "quantize.bits must be in [2, 8]"),
    ("average", {"weights": [1, "x"]}, "average.weights[1] must be a number"),
    ("eval", {"mode": "sliding-ish"}, "eval.mode must be one of"),
])
def test_bad_values_name_the_key(section, values, needle):
    with pytest.raises(ConfigError) as e:
        build_section(section, values)
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_overrides_are_typed_and_scoped(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("train:\n  max_steps: 7\nmodel:\n  num_layers: 3\n")
    p = load_params(params, ("train", "model"), ("seq_len=32", "batch_tokens=64", "model.num_layers=2",
                                                 "grad_clip_norm=0.5"))
    assert p["train"].max_steps == 7 and p["train"].seq_len == 32
    assert p["model"].num_layers == 2 and p["train"].grad_clip_norm == 0.5
    with pytest.raises(ConfigError, match="unknown key quantize.bits for this command"):
        parse_override("quantize.bits=4", ("train", "model"))
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("max_steps", ("train",))
    with pytest.raises(ConfigError, match="train.seq_len must be an integer"):
        load_params(params, ("train",), ("seq_len=long",))


def test_bare_on_off_switches_read_as_yaml_booleans(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("train:\n  autocast: off\n  compile: on\n")  # YAML 1.1: booleans
    p = load_params(params, ("train",))["train"]
    assert (p.autocast, p.compile) == ("off", "on")
    assert load_params(params, ("train",), ("autocast=on",))["train"].autocast == "bf16"


def test_null_level_and_missing_params_file(tmp_path):
    p = load_params(None, ("compress",), ("level=null",))
    assert p["compress"].level is None
    with pytest.raises(ConfigError, match="no such params file"):
        load_params(tmp_path / "nope.yaml", ("train",))


def test_repo_params_yaml_is_valid():
    from pathlib import Path

    import yaml

    from stages.config import SECTIONS

    raw = yaml.safe_load((Path(__file__).parent.parent / "params.yaml").read_text())
    assert set(raw) == set(SECTIONS)
    for section, values in raw.items():
        build_section(section, values)
    assert ModelConfig(**raw["model"]).vocab_size == raw["tokenize"]["vocab_size"]
    assert TrainParams(**raw["train"]).max_steps >= 1
