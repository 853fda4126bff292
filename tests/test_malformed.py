"""Malformed inputs, generated: every command that reads an artifact x every way an artifact can be
wrong, and the data and state files commands read. Each must end with exit status 1 or 2, one line
on stderr naming the file, no traceback, and nothing written."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from golfcli.main import cli
from stages.data.shards import write_shard
from stages.tensorfile import META_KEY, read_header

pytestmark = pytest.mark.usefixtures("cached_bundles")

PARAMS = """
model: {num_layers: 2, model_dim: 64, num_heads: 4, num_kv_heads: 2}
tokenize: {vocab_size: 400}
train: {max_steps: 2, max_wallclock_seconds: 0, batch_tokens: 256, seq_len: 32, autocast: "off",
        checkpoint_every: 1}
average: {weights: []}
quantize: {keep_float_max_numel: 1024, calib_batches: 1, calib_batch_seqs: 2, calib_seq_len: 16}
compress: {codec: zstd, level: 1}
eval: {seq_len: 64}
"""


def _parts(path: Path) -> tuple[dict, dict]:
    data = path.read_bytes()
    return st_load(data), json.loads(read_header(data).metadata[META_KEY])


def _save(path: Path, tensors: dict, meta: dict) -> None:
    path.write_bytes(st_save(tensors, metadata={META_KEY: json.dumps(meta)}))


def _first_float(tensors: dict) -> str:
    return next(k for k in sorted(tensors) if tensors[k].is_floating_point())


def _edit(change):
    def damage(src: Path, dst: Path) -> None:
        tensors, meta = _parts(src)
        change(tensors, meta)
        _save(dst, tensors, meta)
    return damage


def _nan(tensors: dict, meta: dict) -> None:
    name = _first_float(tensors)
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] = float("nan")


DAMAGES = {
    "missing": lambda src, dst: None,
    "empty": lambda src, dst: dst.write_bytes(b""),
    "directory": lambda src, dst: dst.mkdir(),
    "truncated": lambda src, dst: dst.write_bytes(src.read_bytes()[:src.stat().st_size // 2]),
    "garbage": lambda src, dst: dst.write_bytes(bytes(range(256)) * 16),
    "wrong kind": _edit(lambda t, m: m.update(kind="tokenizer")),
    "wrong version": _edit(lambda t, m: m.update(format_version=2)),
    "version as text": _edit(lambda t, m: m.update(format_version="1")),
    "metadata a list": lambda src, dst: dst.write_bytes(
        st_save(_parts(src)[0], metadata={META_KEY: "[1, 2]"})),
    "provenance a list": _edit(lambda t, m: m.update(provenance=[1, 2])),
    "no model config": _edit(lambda t, m: m.pop("model_config")),
    "no storage table": _edit(lambda t, m: m.update(extra={})),
    "missing tensor": _edit(lambda t, m: t.pop(sorted(t)[0])),
    "extra tensor": _edit(lambda t, m: t.update({"lm_head.weight": torch.zeros(4, 4)})),
    "wrong shape": _edit(lambda t, m: t.update({(k := _first_float(t)): t[k].flatten()[:-1]})),
    "wrong dtype": _edit(lambda t, m: t.update({(k := _first_float(t)): t[k].to(torch.int32)})),
    "NaN": _edit(_nan),
}
# Command -> (the artifact kind it reads, its arguments around MODEL and OUT).
COMMANDS = {
    "average": ("checkpoint", lambda m, d, o: ["average", m, "--out", o]),
    "quantize": ("checkpoint", lambda m, d, o: ["quantize", m, "--out", o]),
    "compress": ("quantized", lambda m, d, o: ["compress", m, "--out", o]),
    "eval": ("quantized", lambda m, d, o: ["eval", m, "--data", d, "--out", o]),
    "audit": ("quantized", lambda m, d, o: ["audit", m, "--data", d, "--json", o]),
    "inspect": ("quantized", lambda m, d, o: ["inspect", m]),
}


def golf(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def sources(tmp_path_factory, tiny_run, quantized_path) -> dict[str, Path]:
    run, _ = tiny_run
    folder = tmp_path_factory.mktemp("sources")
    (folder / "p.yaml").write_text(PARAMS)
    return {"checkpoint": run / "final.safetensors", "quantized": quantized_path,
            "params": folder / "p.yaml"}


def assert_refused(r, names: str, out: Path | None = None) -> None:
    """Exit status 1 or 2, one line on stderr naming the file, no traceback, nothing written."""
    assert r.exit_code in (1, 2), r.output
    assert "Traceback" not in r.output and r.exception is None or isinstance(r.exception,
                                                                             SystemExit), r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), r.stderr
    assert names in lines[0], lines[0]
    if out is not None:
        assert not out.exists() and not out.parent.exists()  # not even its folder


@pytest.mark.parametrize("damage", list(DAMAGES))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_malformed_artifact_is_one_line_naming_it(command, damage, sources, data_dir, tmp_path):
    kind, argv = COMMANDS[command]
    if damage == "no storage table" and kind != "quantized":
        damage = "no model config"  # a checkpoint has no storage table to lose
    bad = tmp_path / f"bad.{'golf' if command == 'inspect' else 'safetensors'}"
    DAMAGES[damage](sources[kind], bad)
    out = tmp_path / "out" / "result"
    extra = ["--params", sources["params"]] if command != "inspect" else []
    r = golf(*argv(bad, data_dir, out), *extra)
    assert_refused(r, str(bad), out)


@pytest.fixture(scope="module")
def bad_data(tmp_path_factory, data_dir) -> dict[str, Path]:
    """Copies of the data folder, each with one thing wrong."""
    root = tmp_path_factory.mktemp("bad_data")
    made = {}
    for name in ("val", "train", "tokenizer", "manifest"):
        made[name] = root / name
        shutil.copytree(data_dir, made[name])
    for split in ("val", "train"):
        shard = made[split] / f"{split}_000000.bin"
        tokens = np.fromfile(shard, dtype="<u2", offset=1024).astype(np.int64)
        tokens[5] = 401  # beyond the 400 pieces of the tokenizer
        write_shard(shard, tokens)
    (made["tokenizer"] / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    (made["manifest"] / "manifest.json").write_text("{not json")
    return made


@pytest.mark.parametrize("case, argv, names", [
    ("val", lambda m, q, d, o: ["eval", q, "--data", d, "--out", o], "val_000000.bin"),
    ("val", lambda m, q, d, o: ["audit", q, "--data", d, "--json", o], "val_000000.bin"),
    ("train", lambda m, q, d, o: ["train", d, "--out", o], "train_000000.bin"),
    ("train", lambda m, q, d, o: ["quantize", m, "--out", o, "--method", "gptq", "--calib", d],
     "train_000000.bin"),
    ("tokenizer", lambda m, q, d, o: ["train", d, "--out", o], "tokenizer.model"),
    ("tokenizer", lambda m, q, d, o: ["eval", q, "--data", d, "--out", o], "tokenizer.model"),
    ("manifest", lambda m, q, d, o: ["audit", q, "--data", d, "--json", o], "manifest.json"),
], ids=["eval-oov", "audit-oov", "train-oov", "calib-oov", "train-tokenizer", "eval-tokenizer",
        "audit-manifest"])
def test_malformed_data_is_one_line_naming_the_file(case, argv, names, bad_data, sources,
                                                    tmp_path):
    out = tmp_path / "out" / "result"
    r = golf(*argv(sources["checkpoint"], sources["quantized"], bad_data[case], out),
             "--params", sources["params"])
    assert_refused(r, names, out)


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


@pytest.mark.parametrize("state", [
    b"",
    b"garbage" * 100,
    pickle.dumps(_Evil()),
    "torch:[1, 2]",
    "torch:{'fingerprint': 1, 'state': 2}",
], ids=["empty", "garbage", "malicious", "a list", "mis-structured"])
def test_a_malformed_resume_state_is_one_line_naming_it(state, data_dir, sources, tmp_path):
    path = tmp_path / "run" / "resume" / "state.pt"
    path.parent.mkdir(parents=True)
    if isinstance(state, str):
        torch.save(eval(state.removeprefix("torch:")), path)
    else:
        path.write_bytes(state)
    r = golf("train", data_dir, "--out", tmp_path / "run", "--resume", "--params",
             sources["params"])
    assert_refused(r, str(path))
    assert "code ran" not in r.output and "weights_only" not in r.output
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["resume"]
