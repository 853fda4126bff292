"""The seeds study (studies/seeds/dvc.yaml) runs commands the CLI accepts, with params it accepts.

Running the study takes minutes, so this checks every expanded command without running it: it parses
with the real click command, from the study's folder, and its `--set` overrides build valid params
from the main params.yaml.
"""

import importlib
import itertools
import re
import shlex

import click
import pytest
import yaml

from golfcli.main import COMMANDS, cli
from golfcli.params import load_params
from tests.import_graph import ROOT

STUDY_DIR = ROOT / "studies" / "seeds"
STUDY = yaml.safe_load((STUDY_DIR / "dvc.yaml").read_text())
VARS = {k: v for d in STUDY["vars"] for k, v in d.items()}


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
    study = tmp_path / "studies" / "seeds"  # as in a clone after `dvc repro` made data/tokens
    (tmp_path / "data" / "tokens").mkdir(parents=True)
    study.mkdir(parents=True)
    monkeypatch.chdir(study)
    command = cli.get_command(click.Context(cli), argv[1])
    assert command is not None, f"no command {argv[1]}"
    ctx = command.make_context(argv[1], argv[2:])  # raises on an unknown option or a bad value
    sections = getattr(importlib.import_module(f"golfcli.commands.{COMMANDS[argv[1]]}"),
                       "SECTIONS", None)
    if sections:
        assert ctx.params["params_file"] is not None, "the study must name the main params file"
        assert (STUDY_DIR / ctx.params["params_file"]).resolve() == ROOT / "params.yaml"
        load_params(ROOT / "params.yaml", sections, tuple(ctx.params.get("overrides") or ()))


def test_the_study_is_its_own_dvc_project():
    """So that the main project's `dvc status` and `dvc repro` never see (or run) its stages."""
    assert (STUDY_DIR / ".dvc" / "config").is_file()
    deps = STUDY["stages"]["run"]["deps"]
    assert VARS["data"] in deps and "../../stages" in deps
    assert len(VARS["seeds"]) >= 2  # a t-test needs at least two seeds a side
