"""The seeds study (studies/seeds/dvc.yaml) runs commands the CLI accepts, with params it accepts.

Running the study takes minutes, so this checks every expanded command without running it: it parses
with the real click command, and its `--set` overrides build valid params from params.yaml.
"""

import itertools
import re
import shlex

import click
import pytest
import yaml

from golfcli.main import cli
from golfcli.params import load_params
from tests.import_graph import ROOT

STUDY = yaml.safe_load((ROOT / "studies/seeds/dvc.yaml").read_text())
VARS = {k: v for d in STUDY["vars"] for k, v in d.items()}
SECTIONS = {"train": ("train", "model"), "average": ("average",), "quantize": ("quantize",),
            "compress": ("compress",), "eval": ("eval",), "compare": ()}


def _expand(text: str, item: dict) -> str:
    def value(m: re.Match) -> str:
        obj: object = {**VARS, "item": item}
        for part in m.group(1).split("."):
            obj = obj[part]
        return str(obj)
    return re.sub(r"\$\{([\w.]+)\}", value, text)


def _commands() -> list[list[str]]:
    run = STUDY["stages"]["run"]
    cmds = []
    for variant, seed in itertools.product(VARS["variants"], VARS["seeds"]):
        item = {"variant": variant, "seed": seed}
        cmds += [shlex.split(_expand(c, item)) for c in run["cmd"]]
    cmds.append(shlex.split(STUDY["stages"]["compare"]["cmd"]))
    return cmds


@pytest.mark.parametrize("argv", _commands(), ids=lambda a: " ".join(a[1:3]))
def test_every_study_command_parses_with_valid_params(argv, tmp_path, monkeypatch):
    assert argv[0] == "golf"
    monkeypatch.chdir(tmp_path)  # as from the repo root after `dvc repro`, where data/tokens exists
    (tmp_path / "data/tokens").mkdir(parents=True)
    command = cli.get_command(click.Context(cli), argv[1])
    assert command is not None, f"no command {argv[1]}"
    ctx = command.make_context(argv[1], argv[2:])  # raises on an unknown option or a bad value
    overrides = tuple(ctx.params.get("overrides") or ())
    if SECTIONS[argv[1]]:
        load_params(ROOT / "params.yaml", SECTIONS[argv[1]], overrides)


def test_the_candidate_differs_from_the_baseline():
    names = [v["name"] for v in VARS["variants"]]
    assert names == ["baseline", "candidate"]
    assert VARS["variants"][0]["args"] != VARS["variants"][1]["args"]
    assert len(VARS["seeds"]) >= 2  # a t-test needs at least two seeds a side
