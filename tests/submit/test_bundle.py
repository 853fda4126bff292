"""train_gpt.py: what it holds, that it runs on its own, and that it makes the pipeline's model file."""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from golfcli.main import cli
from golfcli.params import load_params
from stages.params import build, to_dict
from stages.submit import bundle as bundle_module
from stages.submit.bundle import BundleError, build_bundle, bundle_modules, run_params
from stages.submit.entry import SECTIONS
from stages.submit.entry import run as entry_run
from stages.submit.pack import FULL_ERRORS, short_errors
from tests.conftest import TINY_VOCAB

TINY = """
model: {num_layers: 2, model_dim: 64, num_heads: 4, num_kv_heads: 2}
train: {max_steps: 6, max_wallclock_seconds: 0, batch_tokens: 1024, seq_len: 64, autocast: "off",
        log_every: 2}
average: {weights: []}
quantize: {keep_float_max_numel: 1024}
compress: {codec: zstd, level: 3}
eval: {seq_len: 64}
"""
# Every optional module in use: GPTQ with calibration, rate-aware rounding and LQER, the ans
# codec with column contexts, per-document LoRA TTT, and the model's record features.
RICH = """
model: {num_layers: 2, model_dim: 64, num_heads: 4, num_kv_heads: 2, smear_gate: true,
        attn_gate: sparse, bigram_buckets: 64, bigram_dim: 16, skip_gates: true, xsa_last_n: 1,
        activation: leaky_relu2}
train: {max_steps: 6, max_wallclock_seconds: 0, batch_tokens: 1024, seq_len: 64, autocast: "off",
        log_every: 2}
average: {weights: [1, 3]}
quantize: {method: gptq, grid: sdclip, bits: 6, keep_float_max_numel: 1024, lqer_rank: 2,
           calib_batches: 2, calib_batch_seqs: 4, calib_seq_len: 64, gptq_rate_lambda: 0.1,
           fisher_alpha: 1.0}
compress: {codec: ans-columns}
eval: {mode: ttt, seq_len: 64, stride: 32, doc_isolated: true, ttt_lora_rank: 4,
       ttt_chunk_tokens: 32, ttt_optimizer: adamw, ttt_lr: 0.001, ttt_epochs: 1}
"""
# The plain run with global score-first TTT, resumable checkpoints and a grouped layout: the
# other optional modules.
GLOBAL_TTT = (TINY.replace("eval: {seq_len: 64}", "eval: {mode: ttt, seq_len: 64, stride: 32, "
                           "ttt_chunk_tokens: 256, ttt_epochs: 1, ttt_lr: 0.001}")
              .replace("log_every: 2}", "log_every: 2, checkpoint_every: 4}")
              .replace("compress: {codec: zstd, level: 3}",
                       "compress: {codec: zstd, level: 3, layout: grouped}"))


def _params(tmp_path: Path, text: str) -> tuple[Path, dict]:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path, run_params(load_params(path, SECTIONS))


def run_bundle(source: bytes, folder: Path, data_dir: Path, **env) -> subprocess.CompletedProcess:
    """train_gpt.py run in `folder` by an isolated interpreter (-I: no PYTHONPATH, no user site;
    its import hook answers every `stages` import itself, so the installed golf is never used)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train_gpt.py").write_bytes(source)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "GOLF"))}
    # As many threads as this process trains with: another count sums in another order.
    threads = str(torch.get_num_threads())
    return subprocess.run([sys.executable, "-I", "train_gpt.py"], cwd=folder, text=True,
                          capture_output=True, timeout=600,
                          env={**clean, "DATA_PATH": str(data_dir), "OMP_NUM_THREADS": threads,
                               **env})


def test_modules_follow_the_params(tmp_path):
    _, tiny = _params(tmp_path, TINY)
    _, rich = _params(tmp_path, RICH)
    optional = set(bundle_module.OPTIONAL)
    assert not optional & set(bundle_modules(tiny))
    lora_only = optional - {"stages.eval.ttt_global", "stages.train.resume", "stages.codec.layouts"}
    assert lora_only <= set(bundle_modules(rich))
    _, other = _params(tmp_path, GLOBAL_TTT)
    assert {"stages.eval.ttt_global", "stages.train.resume", "stages.codec.layouts"} <= \
        set(bundle_modules(other))  # the bundle runs below cover every optional module
    # A global-TTT run packs its own variant and none of the per-document one's modules.
    global_ttt = {**rich, "eval": {**rich["eval"], "ttt_lora_rank": 0}}
    packed = set(bundle_modules(global_ttt))
    assert "stages.eval.ttt_global" in packed
    assert not {"stages.eval.ttt_document", "stages.eval.lora", "stages.eval.phased"} & packed
    for name in ("stages.tools.compare", "stages.eval.audit", "golfcli.main"):
        assert name not in bundle_modules(rich)  # nothing of the CLI, audit or tools ships


def test_an_optional_module_imported_at_module_level_cannot_be_left_out(tmp_path, monkeypatch):
    _, tiny = _params(tmp_path, TINY)
    monkeypatch.setitem(bundle_module.OPTIONAL, "stages.model.plan", lambda p: False)
    with pytest.raises(BundleError, match="imports stages.model.plan at module level"):
        bundle_modules(tiny)


def test_the_bundle_is_deterministic_and_its_size_is_the_counted_code(tmp_path):
    path, tiny = _params(tmp_path, TINY)
    first, second = build_bundle(tiny), build_bundle(tiny)
    assert first.source == second.source
    r = CliRunner().invoke(cli, ["submission", "--bundle-only", "--out", str(tmp_path / "b"),
                                 "--params", str(path)])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "b" / "train_gpt.py").read_bytes() == first.source
    other = build_bundle({**tiny, "train": {**tiny["train"], "seed": 7}})
    assert other.source != first.source  # the params are frozen inside


def _cli_pipeline(params: Path, data_dir: Path, out: Path) -> dict:
    steps = [["train", str(data_dir), "--out", str(out / "run")],
             ["average", str(out / "run/final.safetensors"), str(out / "run/ema.safetensors"),
              "--out", str(out / "avg.safetensors")],
             ["quantize", str(out / "avg.safetensors"), "--calib", str(data_dir),
              "--out", str(out / "q.safetensors")],
             ["compress", str(out / "q.safetensors"), "--out", str(out / "model.golf")],
             ["eval", str(out / "model.golf"), "--data", str(data_dir),
              "--out", str(out / "eval.json")]]
    for step in steps:
        r = CliRunner().invoke(cli, [*step, "--params", str(params)])
        assert r.exit_code == 0, (step[0], r.output)
    return json.loads((out / "eval.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("text", [TINY, RICH, GLOBAL_TTT], ids=["plain", "rich", "global-ttt"])
def test_the_bundle_run_makes_the_pipelines_model_file_and_score(text, tmp_path, data_dir):
    path, params = _params(tmp_path, text)
    bundle = build_bundle(params)
    r = run_bundle(bundle.source, tmp_path / "folder", data_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    metrics = _cli_pipeline(path, data_dir, tmp_path / "cli")
    assert (tmp_path / "folder/final_model.golf").read_bytes() == \
        (tmp_path / "cli/model.golf").read_bytes()
    log = (tmp_path / "folder/logs/seed1337.txt").read_text()
    assert log == r.stdout
    logged = float(re.search(r"^final_eval .* val_bpb:([0-9.]+)", log, re.M).group(1))
    assert logged == round(metrics["val_bpb"], 6)
    code = re.search(r"^Code size: (\d+) bytes", log, re.M).group(1)
    assert int(code) == len(bundle.source)
    assert re.search(r"^ledger_total: train .* within$", log, re.M)


@pytest.mark.slow
def test_a_run_needing_a_module_the_bundle_left_out_fails_in_one_line(tmp_path, data_dir):
    _, tiny = _params(tmp_path, TINY)
    r = run_bundle(build_bundle(tiny).source, tmp_path / "f", data_dir,
                   GOLF_SET="eval.mode=ttt;train.max_steps=1")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines() == [
        "Error: this train_gpt.py was packed without stages.eval.ttt, which this run needs: pack "
        "it for these params (golf submission)"]


def test_a_bundle_without_data_says_so(tmp_path):
    _, tiny = _params(tmp_path, TINY)
    r = run_bundle(build_bundle(tiny).source, tmp_path / "f", Path(""), DATA_PATH="")
    assert r.returncode == 1 and r.stderr.strip().startswith("Error: DATA_PATH is not set")


@pytest.mark.parametrize("data", [bytes(range(256)), b"\x001\x007\x008\\'\r\n\\\\''", b"", b"'",
                                  b"''", b"a'''b''''", b"\\", b"x\\", b"\r\n\r", b"\x00",
                                  bytes(__import__("random").Random(0).randbytes(4096))])
def test_any_bytes_survive_the_latin1_literal(data, tmp_path):
    """The payload is stored raw in a Latin-1 literal: every byte value, quotes next to quotes
    and at the end, and escapes next to digits and to each other, must come back exactly when
    Python itself reads the file."""
    literal = bundle_module.latin1_literal(data)
    source = ("# coding: latin-1\nimport sys\nsys.stdout.buffer.write(" + literal
              + ".encode('latin-1'))\n")
    (tmp_path / "t.py").write_bytes(source.encode("latin-1"))
    out = subprocess.run([sys.executable, "-I", str(tmp_path / "t.py")], capture_output=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout == data
    if len(data) >= 4096:  # compressed data is close to random: escapes stay rare
        assert len(literal) < 1.03 * len(data)


def test_every_short_error_points_at_its_raise_or_check(tmp_path):
    """The packed copy keeps an error's values and where its words are in golf's source: each
    location must be the line of the raise or check() it replaced, in the module it names."""
    _, rich = _params(tmp_path, RICH)
    found = 0
    for module in bundle_modules(rich):
        path = bundle_module.module_path(module)
        lines = path.read_text().splitlines()
        where = path.relative_to(bundle_module.ROOT).as_posix()
        packed = ast.unparse(short_errors(module, ast.parse(path.read_text()), where))
        locations = re.findall(r"(stages/[\w/]+\.py):(\d+)", packed)
        if module.startswith(FULL_ERRORS):
            assert not locations  # the run's surroundings: messages in full
        for named, line in locations:
            assert named == where
            assert re.match(r"\s*(raise \w|check\()", lines[int(line) - 1]), (where, line)
            found += 1
    assert found > 50


def test_a_bad_override_in_a_bundle_is_one_line_with_its_value_and_source_line(tmp_path):
    _, tiny = _params(tmp_path, TINY)
    r = run_bundle(build_bundle(tiny).source, tmp_path / "f", tmp_path / "no-data",
                   GOLF_SET="train.warmdown_frac=1.3")
    assert r.returncode == 1
    [line] = r.stderr.strip().splitlines()
    where, number, values = re.fullmatch(r"Error: (stages/\S+\.py):(\d+) (.*)", line).groups()
    assert values.split() == ["train.warmdown_frac", "in", "[0,", "1]", "1.3"]
    source = (bundle_module.ROOT / where).read_text().splitlines()[int(number) - 1]
    assert "raise ConfigError" in source


PRESETS = sorted((bundle_module.ROOT / "configs").glob("*.yaml"))


def _preset_at_test_size(path: Path) -> dict:
    """A preset's params with every switch it sets, at the size of the test data."""
    p = yaml.safe_load(path.read_text())
    p["model"].update(vocab_size=TINY_VOCAB, model_dim=64, num_heads=2, num_kv_heads=1,
                      bigram_dim=16, ve_dim=16)
    p["train"].update(max_steps=2, max_wallclock_seconds=0, schedule="steps", batch_tokens=1024,
                      seq_len=64, autocast="off", compile="off", log_every=1, val_every=0)
    p["quantize"].update(calib_batches=1, calib_batch_seqs=2, calib_seq_len=64,
                         keep_float_max_numel=1024)
    p["eval"].update(seq_len=64, stride=32, batch_seqs=4)
    return {s: to_dict(build(cls, p.get(s))) for s, cls in SECTIONS.items()}


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_runs_packed_as_the_library_runs_it(preset, tmp_path, data_dir,
                                                         monkeypatch):
    """The packing rewrites names, arguments and errors: each preset's own code paths (its
    model switches, optimizer, quantizer, codec and eval) must compute the same model file and
    score packed as the unpacked library does in this process."""
    frozen = _preset_at_test_size(preset)
    bundle = build_bundle(frozen)
    r = run_bundle(bundle.source, tmp_path / "packed", data_dir)
    assert r.returncode == 0, r.stdout + r.stderr
    (tmp_path / "library").mkdir()
    monkeypatch.chdir(tmp_path / "library")
    monkeypatch.setenv("DATA_PATH", str(data_dir))
    monkeypatch.delenv("GOLF_SET", raising=False)
    monkeypatch.delenv("SEED", raising=False)
    entry_run(frozen, str(tmp_path / "packed/train_gpt.py"))
    assert (tmp_path / "packed/final_model.golf").read_bytes() == \
        (tmp_path / "library/final_model.golf").read_bytes()

    def scores(log: str) -> str:
        return re.sub(r" eval_time:\S+", "", re.search(r"^final_eval .*$", log, re.M).group(0))
    library_log = (tmp_path / "library/logs/seed1337.txt").read_text()
    assert scores(r.stdout) == scores(library_log)
