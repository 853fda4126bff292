"""What a command writes never overwrites what it reads (D3), and the params a command falls back
to are announced before any work (R1)."""

import json

import pytest
from click.testing import CliRunner

from golfcli.main import cli
from stages.files import sha256_file

PARAMS = """
model: {num_layers: 2, model_dim: 64, num_heads: 4, num_kv_heads: 2}
tokenize: {vocab_size: 400}
train: {max_steps: 2, max_wallclock_seconds: 0, batch_tokens: 256, seq_len: 32, autocast: "off"}
average: {weights: []}
quantize: {keep_float_max_numel: 1024}
compress: {codec: zstd, level: 1}
eval: {seq_len: 64}
"""


def golf(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture
def inputs(tmp_path, tiny_run, quantized_path, data_dir, corpus_jsonl):
    """Copies of every kind of input, and their hashes."""
    import shutil

    run, _ = tiny_run
    made = {"ckpt": tmp_path / "ckpt.safetensors", "q": tmp_path / "q.safetensors",
            "data": tmp_path / "data", "corpus": tmp_path / "corpus" / "docs.jsonl",
            "eval": tmp_path / "eval.json", "params": tmp_path / "p.yaml"}
    shutil.copy(run / "final.safetensors", made["ckpt"])
    shutil.copy(quantized_path, made["q"])
    shutil.copytree(data_dir, made["data"])
    made["corpus"].parent.mkdir()
    shutil.copy(corpus_jsonl, made["corpus"])
    made["eval"].write_text(json.dumps({"val_loss": 3.0}))
    made["params"].write_text(PARAMS)
    (tmp_path / "link.safetensors").symlink_to(made["ckpt"])
    made["link"] = tmp_path / "link.safetensors"
    return made


CASES = {
    "eval --out MODEL": lambda i: ["eval", i["q"], "--data", i["data"], "--out", i["q"]],
    "eval --out DATA/tokenizer.model": lambda i: ["eval", i["q"], "--data", i["data"], "--out",
                                                   i["data"] / "tokenizer.model"],
    "audit --json MODEL": lambda i: ["audit", i["q"], "--data", i["data"], "--json", i["q"]],
    "quantize --out CKPT": lambda i: ["quantize", i["ckpt"], "--out", i["ckpt"]],
    "quantize --out a symlink to CKPT": lambda i: ["quantize", i["ckpt"], "--out", i["link"]],
    "quantize --out inside --calib": lambda i: ["quantize", i["ckpt"], "--method", "gptq",
                                                "--calib", i["data"], "--out", i["data"] / "q.st"],
    "compress --out QUANTIZED": lambda i: ["compress", i["q"], "--out", i["q"]],
    "compress --report OUT": lambda i: ["compress", i["q"], "--out", i["eval"].with_name("m.golf"),
                                        "--report", i["eval"].with_name("m.golf")],
    "average --out CKPT": lambda i: ["average", i["link"], i["q"], "--out", i["ckpt"]],
    "import --out SOURCE": lambda i: ["import", i["ckpt"], "--out", i["ckpt"]],
    "compare --out RUN": lambda i: ["compare", i["eval"], i["eval"], "--baseline", i["eval"],
                                    i["eval"], "--out", i["eval"]],
    "train --out DATA": lambda i: ["train", i["data"], "--out", i["data"]],
    "train --out inside DATA": lambda i: ["train", i["data"], "--out", i["data"] / "run"],
    "tokenize --out holding the corpus": lambda i: ["tokenize", "--corpus", i["corpus"], "--out",
                                                    i["corpus"].parent],
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_output_that_is_an_input_is_refused(case, inputs, tmp_path):
    """D3: resolved paths, symlinks followed; the inputs are left exactly as they were."""
    before = {p: sha256_file(f) for p, f in inputs.items() if f.is_file()}
    listing = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    extra = [] if case.startswith("compare") else ["--params", inputs["params"]]
    r = golf(*CASES[case](inputs), *extra)
    assert r.exit_code == 1, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and ("is also an input" in lines[0] or "inside the input folder"
                                in lines[0] or "lies inside the output" in lines[0]
                                or "given twice as an output" in lines[0]), lines
    assert {p: sha256_file(f) for p, f in inputs.items() if f.is_file()} == before
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == listing


def test_defaults_a_params_file_lacks_are_announced_before_any_work(data_dir, tmp_path):
    """R1: a params file without model/train sections trained the full-scale model unannounced
    (then the kernel killed it); now one line says which sections fall back, and the run is
    refused by its memory estimate if it cannot fit."""
    params = tmp_path / "p.yaml"
    params.write_text("eval: {seq_len: 64}\n")
    r = golf("train", data_dir, "--out", tmp_path / "run", "--params", params, "--set",
             "train.batch_tokens=1000000000000")
    lines = r.stderr.strip().splitlines()
    assert lines[0] == (f"params: {params} has no train, model section: golf's built-in defaults "
                        f"for train, model (the full-scale baseline; `golf params train model` "
                        f"lists them)")
    assert r.exit_code == 1 and lines[1].startswith("Error: training needs at least")
    assert not (tmp_path / "run").exists()
