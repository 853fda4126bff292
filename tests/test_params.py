"""The params engine (stages/params.py) and how commands read params files and `--set` overrides
(golfcli/params.py): typed coercion, one-line errors naming the key, help for every field."""

import dataclasses
import json
import typing
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import pytest
import yaml
from click.testing import CliRunner

from golfcli.commands.params import CLASSES
from golfcli.main import cli
from golfcli.params import KNOWN_SECTIONS, describe_source, load_params, parse_override
from stages.model.config import ModelConfig
from stages.params import (
    ConfigError,
    OnOff,
    Range,
    build,
    field_docs,
    param,
    to_dict,
    type_text,
    validate,
)
from stages.train.params import TrainParams
from tests.conftest import ROOT


@dataclass(frozen=True)
class Demo:
    """Every kind of field the engine coerces."""

    SECTION: ClassVar[str] = "demo"
    RENAMED: ClassVar[dict[str, str]] = {"old": "set demo.frac"}

    frac: Annotated[float, Range(0, 1)] = param(0.5, "a fraction")
    positive: Annotated[int, Range(0, lo_open=True)] = param(1, "a count above zero")
    mode: Literal["a", "b"] = param("a", "one of two")
    switch: Annotated[Literal["auto", "on", "off"], OnOff()] = param("auto", "a YAML on/off")
    items: list[Annotated[int, Range(1)]] = param([], "a list")
    table: dict[Literal["x", "y"], float] = param({}, "a mapping")
    maybe: Annotated[int, Range(1)] | None = param(None, "optional")

    def __post_init__(self):
        validate(self)


@pytest.mark.parametrize("values, message", [
    ({"frac": 1.3}, "demo.frac must be in [0, 1], got 1.3"),
    ({"frac": "half"}, "demo.frac must be a number, got 'half'"),
    ({"frac": True}, "demo.frac must be a number, got True"),
    ({"positive": 0}, "demo.positive must be > 0, got 0"),
    ({"positive": 1.5}, "demo.positive must be an integer, got 1.5"),
    ({"mode": "x"}, "demo.mode must be one of a, b; got 'x'"),
    ({"mode": True}, "demo.mode must be one of a, b; got True"),
    ({"switch": "sometimes"}, "demo.switch must be one of auto, on, off; got 'sometimes'"),
    ({"items": 3}, "demo.items must be a list, got 3"),
    ({"items": [1, "2"]}, "demo.items[1] must be an integer, got '2'"),
    ({"items": [0]}, "demo.items[0] must be >= 1, got 0"),
    ({"table": [1]}, "demo.table must be a mapping, got [1]"),
    ({"table": {"z": 1.0}}, "demo.table key must be one of x, y; got 'z'"),
    ({"table": {"x": "a"}}, "demo.table.x must be a number, got 'a'"),
    ({"maybe": 0}, "demo.maybe must be >= 1, got 0"),
])
def test_bad_values_are_one_line_errors_naming_the_key(values, message):
    with pytest.raises(ConfigError) as e:
        build(Demo, values)
    assert str(e.value) == message


def test_values_are_coerced_to_their_types():
    d = build(Demo, {"frac": 1, "positive": 2.0, "switch": False, "items": (1, 2),
                     "table": {"x": 1}, "maybe": None})
    assert d.frac == 1.0 and isinstance(d.frac, float)
    assert d.positive == 2 and isinstance(d.positive, int)
    assert d.switch == "off" and build(Demo, {"switch": True}).switch == "on"
    assert d.items == [1, 2] and d.table == {"x": 1.0} and d.maybe is None
    assert build(Demo, {"maybe": 3}).maybe == 3
    assert build(Demo, None) == Demo() and to_dict(Demo())["items"] == []
    assert Demo().items is not Demo().items  # list defaults are copied per instance


def test_unknown_and_renamed_keys():
    with pytest.raises(ConfigError) as e:
        build(Demo, {"fracc": 1})
    assert str(e.value) == ("unknown key demo.fracc (did you mean 'frac'?) (known: frac, items, "
                            "maybe, mode, positive, switch, table)")
    with pytest.raises(ConfigError, match=r"^demo.old is gone: set demo.frac$"):
        build(Demo, {"old": 1})
    with pytest.raises(ConfigError) as e:
        build(TrainParams, {"max_stepz": 3})
    assert all(f.name in str(e.value) for f in dataclasses.fields(TrainParams))
    with pytest.raises(ConfigError, match="model.attn_out_gate is gone: set model.attn_gate: out"):
        build(ModelConfig, {"attn_out_gate": True})
    with pytest.raises(ConfigError, match="params section 'demo' must be a mapping"):
        build(Demo, [1, 2])


def test_type_text_and_ranges_read_like_the_docs():
    hints = typing.get_type_hints(Demo, include_extras=True)
    assert type_text(hints["frac"]) == "float in [0, 1]"
    assert type_text(hints["positive"]) == "int > 0"
    assert type_text(hints["mode"]) == "a | b"
    assert type_text(hints["items"]) == "list of int >= 1"
    assert type_text(hints["table"]) == "map of (x | y) -> float"
    assert type_text(hints["maybe"]) == "int >= 1 | null"
    assert str(Range(0, 1, hi_open=True)) == "in [0, 1)" and str(Range(hi=2.5)) == "<= 2.5"


@pytest.mark.parametrize("section, values, needle", [
    ("train", {"max_steps": "many"}, "train.max_steps must be an integer"),
    ("train", {"warmdown_frac": 1.3}, "train.warmdown_frac must be in [0, 1], got 1.3"),
    ("train", {"batch_tokens": 100, "seq_len": 64}, "must be a positive multiple of train.seq_len"),
    ("model", {"model_dim": 100, "num_heads": 3}, "model.model_dim (100) must be divisible"),
    ("quantize", {"bits": 9}, "quantize.bits must be in [2, 8], got 9"),
    ("average", {"weights": [1, "x"]}, "average.weights[1] must be a number"),
    ("eval", {"mode": "sliding-ish"}, "eval.mode must be one of chunked, sliding, ttt"),
    ("compress", {"codec": "zip"}, "compress.codec must be one of zstd, brotli, lzma, ans"),
    ("tokenize", {"vocab_size": 0}, "tokenize.vocab_size must be"),
])
def test_every_section_names_the_key_in_its_errors(section, values, needle):
    with pytest.raises(ConfigError) as e:
        build(CLASSES[section], values)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_every_field_of_every_section_has_help():
    assert tuple(CLASSES) == KNOWN_SECTIONS
    for section, cls in CLASSES.items():
        assert cls.SECTION == section
        for doc in field_docs(cls):
            assert doc["help"].strip(), f"{section}.{doc['key']} has no help"


def test_golf_params_lists_every_train_field_with_its_type_and_default():
    r = CliRunner().invoke(cli, ["params", "train"])
    assert r.exit_code == 0, r.output
    lines = {line.split()[0]: line for line in r.output.splitlines()
             if line.startswith("  train.")}
    hints = typing.get_type_hints(TrainParams, include_extras=True)
    for f in dataclasses.fields(TrainParams):
        line = lines[f"train.{f.name}"]
        assert line.endswith(f"default {json.dumps(f.default)})"), line
        base = typing.get_args(hints[f.name])[0] if hasattr(hints[f.name], "__metadata__") \
            else hints[f.name]
        choices = typing.get_args(base) if typing.get_origin(base) is Literal else ()
        expected = " | ".join(choices) if choices else base.__name__
        assert f"({expected}" in line, line
    assert len(lines) == len(dataclasses.fields(TrainParams))


def test_overrides_are_typed_and_scoped(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("train:\n  max_steps: 7\nmodel:\n  num_layers: 3\n")
    classes = {"train": TrainParams, "model": ModelConfig}
    p = load_params(params, classes, ("seq_len=32", "batch_tokens=64", "model.num_layers=2",
                                      "grad_clip_norm=0.5"))
    assert p["train"].max_steps == 7 and p["train"].seq_len == 32
    assert p["model"].num_layers == 2 and p["train"].grad_clip_norm == 0.5
    with pytest.raises(ConfigError, match="unknown key quantize.bits for this command"):
        parse_override("quantize.bits=4", ("train", "model"))
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("max_steps", ("train",))
    with pytest.raises(ConfigError, match="train.seq_len must be an integer"):
        load_params(params, {"train": TrainParams}, ("seq_len=long",))
    assert describe_source(params, ("train", "model")) == f"params: {params} [train, model]"


def test_bare_on_off_switches_read_as_yaml_booleans(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("train:\n  autocast: off\n  compile: on\n")  # YAML 1.1: booleans
    p = load_params(params, {"train": TrainParams})["train"]
    assert (p.autocast, p.compile) == ("off", "on")
    assert load_params(params, {"train": TrainParams}, ("autocast=on",))["train"].autocast == "bf16"


@pytest.mark.parametrize("text, message", [
    ("qunatize: {bits: 4}\n", "unknown section 'qunatize' (did you mean 'quantize'?) (known: "
                             "model, tokenize, train, "),
    ("train: []\n", "params section 'train' must be a mapping"),
    ("train: {max_steps: .inf}\n", "train.max_steps must be an integer"),
    ("train: {matrix_lr: .nan}\n", "train.matrix_lr must be a finite number, got nan"),
    ("model: {attn_out_gate: true}\n", "model.attn_out_gate is gone: set model.attn_gate: out"),
    ("- a list\n", "expected a mapping of sections"),
    ("train: [1]\n", "params section 'train' must be a mapping"),
    ("train: {a: [}\n", "not valid YAML"),
])
def test_bad_params_files(tmp_path, text, message):
    params = tmp_path / "p.yaml"
    params.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_params(params, {"train": TrainParams, "model": ModelConfig})
    assert message in str(e.value) and "\n" not in str(e.value)


def test_null_level_and_missing_params_file(tmp_path):
    p = load_params(None, {"compress": CLASSES["compress"]}, ("level=null",))
    assert p["compress"].level is None
    with pytest.raises(ConfigError, match="no such params file"):
        load_params(tmp_path / "nope.yaml", {"train": TrainParams})


def test_repo_params_yaml_is_valid():
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert set(raw) == set(CLASSES)
    built = load_params(ROOT / "params.yaml", CLASSES)
    vocab = raw["model"].get("vocab_size")  # absent: filled in from the tokenizer by golf train
    assert vocab in (None, raw["tokenize"]["vocab_size"])
    assert built["model"].with_vocab(raw["tokenize"]["vocab_size"], "t").vocab_size == \
        raw["tokenize"]["vocab_size"]


def test_infinite_values_are_refused_everywhere():
    """L6, S1: TTT at lr=inf passed the audit; average.weights=[inf, 1] made NaN weights."""
    with pytest.raises(ConfigError, match="eval.ttt_lr must be a finite number, got inf"):
        load_params(None, {"eval": CLASSES["eval"]}, ("ttt_lr=.inf",))
