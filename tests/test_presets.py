"""The presets under configs/: full-scale record stacks that load, build and count as the spec says."""

import dataclasses
import re

import pytest
import torch
import yaml

from golfcli.params import load_params
from stages import distributed
from stages.config import SECTIONS
from stages.model import build_model, count_parameters
from tests.import_graph import ROOT

PRESETS = sorted((ROOT / "configs").glob("*.yaml"))
# Parameter counts the reference gives exactly (baseline, best) or to 4 digits (pr401: the 03-22
# GPTQ-lite stack, 26.99 M; pr1423: the SP8192 stack, 35.94 M).
COUNTS = {"baseline": 17_059_912, "pr401": 26_993_257, "pr1423": 35_943_512,
          "best": 35_945_671}


def _load(path):
    return load_params(path, tuple(SECTIONS))


def test_the_expected_presets_exist():
    assert {p.stem for p in PRESETS} == {"baseline", "pr264", "pr401", "pr455", "pr398", "pr1423",
                                        "best"}


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_loads_with_the_params_schema(path):
    raw = yaml.safe_load(path.read_text())
    assert set(raw) == set(SECTIONS), "a preset sets every section"
    p = _load(path)  # unknown keys and bad values raise
    assert p["tokenize"].vocab_size == p["model"].vocab_size
    distributed.check_world_size(p["train"], 8)  # the batch splits over 8 GPUs


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_header_names_the_submission_and_its_val_bpb(path):
    header = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        header.append(line)
    text = "\n".join(header)
    assert re.search(r"\b[01]\.\d{4}\b", text), "the header gives a reported val_bpb"
    name = "NaiveBaseline" if path.stem == "baseline" else \
        "best published" if path.stem == "best" else f"PR #{path.stem[2:]}"
    assert name in text


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.stem)
def test_preset_parameter_count(path):
    cfg = _load(path)["model"]
    n = count_parameters(cfg)  # on the meta device: no memory for 36 M parameters
    if path.stem in COUNTS:
        assert n == COUNTS[path.stem]
    else:
        assert 20_000_000 < n < 40_000_000


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
