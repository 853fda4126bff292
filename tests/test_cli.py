"""The command line as a user meets it: help, params, errors, and the stages chained."""

import dataclasses
import json
import shutil

import pytest
from click.testing import CliRunner

from golfcli.commands.params import CLASSES
from golfcli.main import cli
from stages.files import sha256_file

COMMANDS = ("tokenize", "train", "average", "quantize", "compress", "eval", "audit", "compare",
            "inspect", "import", "params", "submission")
# The params sections each stage command reads (its own first).
# The sections a train_gpt.py freezes: compress and audit read them all to measure it.
RUN = ("model", "train", "average", "quantize")
STAGE_SECTIONS = {"tokenize": ("tokenize",), "train": ("train", "model"), "average": ("average",),
                  "quantize": ("quantize",), "compress": ("compress", *RUN, "eval"),
                  "eval": ("eval",), "audit": ("eval", *RUN, "compress")}

TINY_PARAMS = """
model: {vocab_size: 400, num_layers: 2, model_dim: 64, num_heads: 4, num_kv_heads: 2}
tokenize: {vocab_size: 400, max_docs: 300}
train: {max_steps: 8, max_wallclock_seconds: 0, batch_tokens: 1024, seq_len: 64,
        matrix_lr: 0.02, embed_lr: 0.03, scalar_lr: 0.02, ema_decay: 0.9}
average: {weights: [1, 3]}
quantize: {keep_float_max_numel: 1024}
compress: {codec: zstd, level: 3}
eval: {seq_len: 64}
"""


def golf(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_help_lists_every_command_and_each_command_has_help():
    r = golf("--help")
    assert r.exit_code == 0
    commands = r.output.split("Commands:")[1].splitlines()
    listed = [line.split()[0] for line in commands if line.strip()]
    assert listed == list(COMMANDS)
    for name in COMMANDS:
        sub = golf(name, "--help")
        assert sub.exit_code == 0 and sub.output.startswith("Usage: ") and len(sub.output) > 200


@pytest.mark.parametrize("command", list(STAGE_SECTIONS))
def test_stage_help_lists_the_keys_of_its_sections(command):
    out = golf(command, "--help").output
    for section in STAGE_SECTIONS[command]:
        keys = out.split(f"{section}: ", 1)[1].split("\n\n", 1)[0]
        listed = [k.strip() for k in keys.replace("\n", " ").split(",")]
        assert listed == [f.name for f in dataclasses.fields(CLASSES[section])], section
    assert f"golf params {' '.join(STAGE_SECTIONS[command])}" in out


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, corpus_jsonl):
    """Every stage through the CLI, in order, on the tiny params."""
    d = tmp_path_factory.mktemp("cli")
    params = d / "params.yaml"
    params.write_text(TINY_PARAMS)
    p = ("--params", params)
    steps = [
        ("tokenize", "--corpus", corpus_jsonl, "--out", d / "data", *p),
        ("train", d / "data", "--out", d / "run", *p),
        ("average", d / "run/final.safetensors", d / "run/ema.safetensors", "--out", d / "avg.safetensors",
         *p),
        ("quantize", d / "avg.safetensors", "--out", d / "q.safetensors", *p),
        ("compress", d / "q.safetensors", "--out", d / "m.golf", "--report", d / "size.json", *p),
        ("eval", d / "m.golf", "--data", d / "data", "--out", d / "metrics.json", *p),
    ]
    outputs = {}
    for step in steps:
        r = golf(*step)
        assert r.exit_code == 0, (step[0], r.output)
        outputs[step[0]] = r.output
    return d, params, outputs


def test_every_stage_ends_with_where_its_params_came_from(pipeline, tmp_path, monkeypatch):
    d, params, out = pipeline
    for command, output in out.items():
        last = output.strip().splitlines()[-1]
        assert last == f"params: {params} [{', '.join(STAGE_SECTIONS[command])}]", command
    monkeypatch.chdir(tmp_path)  # no ./params.yaml: the built-in defaults, and it says so
    r = golf("compress", d / "q.safetensors", "--out", tmp_path / "m.golf", "--set", "level=3")
    assert r.exit_code == 0, r.output
    assert r.output.strip().splitlines()[-1] == \
        f"params: built-in defaults (no ./params.yaml) [{', '.join(STAGE_SECTIONS['compress'])}]"
    (tmp_path / "params.yaml").write_text("compress: {level: 2}\n")  # DVC's convention
    r = golf("compress", d / "q.safetensors", "--out", tmp_path / "m.golf")
    assert r.output.strip().splitlines()[-1] == \
        f"params: params.yaml [{', '.join(STAGE_SECTIONS['compress'])}]"
    assert "zstd-2 " in r.output


def test_pipeline_through_the_cli(pipeline):
    d, _, out = pipeline
    assert {p.name for p in (d / "run").iterdir()} == {"final.safetensors", "ema.safetensors",
                                                      "train.log", "train_metrics.json", "live",
                                                      "swa"}
    metrics = json.loads((d / "metrics.json").read_text())
    manifest = json.loads((d / "data/manifest.json").read_text())
    assert metrics["bytes"] == manifest["val"]["text_bytes"] and metrics["val_bpb"] > 0
    size = json.loads((d / "size.json").read_text())
    assert size["model_bytes"] == (d / "m.golf").stat().st_size
    assert "total" in out["compress"] and "/ 16,000,000" in out["compress"]
    assert json.loads((d / "run/train_metrics.json").read_text())["steps"] == 8


def test_inspect_shows_lineage(pipeline):
    d, _, _ = pipeline
    r = golf("inspect", d / "m.golf", "--json")
    assert r.exit_code == 0
    info = json.loads(r.output)
    assert info["kind"] == "quantized" and info["blob"]["codec"] == "zstd"
    assert info["parents"]["checkpoint"] == sha256_file(d / "avg.safetensors")
    assert info["params"]["quantize"]["method"] == "rtn"
    avg = json.loads(golf("inspect", d / "avg.safetensors", "--json").output)
    assert avg["parents"] == {"input_0": sha256_file(d / "run/final.safetensors"),
                              "input_1": sha256_file(d / "run/ema.safetensors")}
    assert avg["params"]["average"]["weights"] == [1.0, 3.0]
    text = golf("inspect", d / "run/final.safetensors")
    assert text.exit_code == 0 and "kind       checkpoint" in text.output
    assert "tok_emb.weight" in text.output


def test_swap_quantizer_and_codec_on_a_saved_checkpoint(pipeline):
    d, params, _ = pipeline
    r = golf("quantize", d / "avg.safetensors", "--out", d / "q4.safetensors", "--params", params,
             "--set", "bits=4")
    assert r.exit_code == 0 and "int4" in r.output
    r = golf("compress", d / "q4.safetensors", "--out", d / "q4.golf", "--codec", "brotli",
             "--params", params, "--set", "level=5")
    assert r.exit_code == 0
    assert (d / "q4.golf").stat().st_size < (d / "m.golf").stat().st_size


def _one_line_error(r, *needles):
    assert r.exit_code != 0
    lines = [line for line in r.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 or lines[0].startswith("Usage:"), r.output
    for needle in needles:
        assert needle in r.output, r.output


def test_bad_overrides(pipeline):
    d, params, _ = pipeline
    r = golf("quantize", d / "avg.safetensors", "--out", d / "x.safetensors", "--params", params,
             "--set", "bitz=4")
    _one_line_error(r, "unknown key quantize.bitz")
    r = golf("quantize", d / "avg.safetensors", "--out", d / "x.safetensors", "--params", params,
             "--set", "bits=eight")
    _one_line_error(r, "quantize.bits must be an integer")
    r = golf("train", d / "data", "--out", d / "r2", "--params", params, "--set", "model.num_heads=3")
    _one_line_error(r, "model.model_dim (64) must be divisible by model.num_heads (3)")
    assert not (d / "x.safetensors").exists() and not (d / "r2").exists()


@pytest.mark.parametrize("text, needle", [
    ("qunatize: {bits: 4}\n", "unknown section 'qunatize'"),
    ("model: {sparse_attn_gate: true}\n",
     "model.sparse_attn_gate is gone: set model.attn_gate: sparse"),
])
def test_bad_params_files_fail_in_one_line(pipeline, tmp_path, text, needle):
    d, _, _ = pipeline
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    r = golf("train", d / "data", "--out", tmp_path / "run", "--params", bad)
    _one_line_error(r, needle)
    assert not (tmp_path / "run").exists()


def test_bad_inputs_fail_in_one_line_and_write_nothing(pipeline, tmp_path):
    d, params, _ = pipeline
    out = tmp_path / "out"
    truncated = tmp_path / "trunc.safetensors"
    truncated.write_bytes((d / "avg.safetensors").read_bytes()[:500])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    latin1 = tmp_path / "latin.jsonl"
    latin1.write_bytes(b'{"text": "caf\xe9"}\n')
    cases = [
        (("quantize", tmp_path / "missing.safetensors", "--out", out), "no such file"),
        (("quantize", truncated, "--out", out), "not a readable safetensors artifact"),
        (("quantize", d / "q.safetensors", "--out", out), "expected a checkpoint artifact, got quantized"),
        (("average", d / "q.safetensors", "--out", out), "expected a checkpoint artifact"),
        (("eval", truncated, "--data", d / "data", "--out", out), "not a readable safetensors"),
        (("compress", d / "m.golf", "--out", out), "not a readable safetensors artifact"),
        (("tokenize", "--corpus", empty, "--out", out), "no non-empty documents"),
        (("tokenize", "--corpus", latin1, "--out", out), "not UTF-8"),
        (("tokenize", "--corpus", tmp_path / "nope", "--out", out), "no such file or directory"),
        (("train", d / "data", "--out", out, "--set", "model.vocab_size=512"),
         "model.vocab_size is 512 but"),
    ]
    for args, needle in cases:
        r = golf(*args, "--params", params)
        _one_line_error(r, *(n for n in [needle] if n))
        assert not out.exists(), args
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl", "latin.jsonl",
                                                          "trunc.safetensors"]


def test_vocab_larger_than_the_corpus_supports(corpus_jsonl, tmp_path):
    r = golf("tokenize", "--corpus", corpus_jsonl, "--out", tmp_path / "t", "--set", "vocab_size=60000",
             "--set", "max_docs=50")
    _one_line_error(r, "tokenize.vocab_size=60000 is larger than this corpus supports")
    assert not (tmp_path / "t").exists()


def test_official_layout_data_dir_works_without_retokenizing(pipeline, tmp_path):
    """fineweb_{train,val}_*.bin shards next to a *.model tokenizer: train and eval read it as is."""
    d, params, _ = pipeline
    official = tmp_path / "official"
    official.mkdir()
    shutil.copy(d / "data/train_000000.bin", official / "fineweb_train_000000.bin")
    shutil.copy(d / "data/val_000000.bin", official / "fineweb_val_000000.bin")
    shutil.copy(d / "data/tokenizer.model", official / "fineweb_400_bpe.model")
    r = golf("train", official, "--out", tmp_path / "run", "--params", params, "--set", "max_steps=2")
    assert r.exit_code == 0, r.output
    ours = golf("eval", d / "run/final.safetensors", "--data", d / "data", "--params", params,
                "--out", tmp_path / "a.json")
    theirs = golf("eval", d / "run/final.safetensors", "--data", official, "--params", params,
                  "--out", tmp_path / "b.json")
    assert ours.exit_code == theirs.exit_code == 0
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert a["val_bpb"] == b["val_bpb"] and a["bytes"] == b["bytes"]


def test_gptq_calibration_through_the_cli(pipeline):
    d, params, _ = pipeline
    base = ("quantize", d / "avg.safetensors", "--params", params, "--method", "gptq", "--grid",
            "sdclip", "--set", "bits=6", "--set", "calib_batches=2", "--set", "calib_seq_len=32")
    r = golf(*base, "--out", d / "g.safetensors")
    _one_line_error(r, "quantize gptq/sdclip needs --calib DATA_DIR or --calib self")
    r = golf(*base, "--out", d / "g.safetensors", "--calib", d / "data/val_000000.bin")
    _one_line_error(r, "--calib takes a data directory")
    assert not (d / "g.safetensors").exists()
    r = golf(*base, "--out", d / "g.safetensors", "--calib", d / "data")
    assert r.exit_code == 0, r.output
    info = json.loads(golf("inspect", d / "g.safetensors", "--json").output)
    assert info["provenance"]["calibration"]["source"] == "train_shards"
    r = golf(*base, "--out", d / "s.safetensors", "--calib", "self")
    assert r.exit_code == 0, r.output
    info = json.loads(golf("inspect", d / "s.safetensors", "--json").output)
    assert info["provenance"]["calibration"]["source"] == "self"


def _counted_code(params) -> int:
    """The bytes of the train_gpt.py a submission of `params` would ship."""
    from golfcli.params import load_params
    from stages.submit.bundle import build_bundle, run_params
    from stages.submit.entry import SECTIONS

    return len(build_bundle(run_params(load_params(params, SECTIONS))).source)


def test_target_bytes_through_the_cli(pipeline):
    d, params, _ = pipeline
    code = _counted_code(params)
    target = code + int(0.8 * (d / "m.golf").stat().st_size)
    r = golf("quantize", d / "avg.safetensors", "--out", d / "t.safetensors", "--params", params,
             "--target-bytes", target, "--codec", "zstd")
    assert r.exit_code == 0, r.output
    assert "clip_multiplier" in r.output
    r = golf("compress", d / "t.safetensors", "--out", d / "t.golf", "--params", params,
             "--set", "level=null")
    assert r.exit_code == 0
    assert (d / "t.golf").stat().st_size + code <= target
