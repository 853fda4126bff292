"""`golf train` as a job: vocabulary from the tokenizer, the run directory, SWA snapshots for
`golf average`, resume and validation through the CLI, and the live curves."""

import json

import pytest
import torch
from click.testing import CliRunner

from golfcli.main import cli
from stages import artifacts
from stages.files import sha256_file
from stages.model.config import ModelConfig
from stages.params import ConfigError
from stages.train.livelog import LiveLog
from stages.train.params import TrainParams
from stages.train.run import TrainJob
from tests.conftest import TINY_MODEL, TINY_TRAIN

MODEL = "model: {num_layers: 2, model_dim: 64, num_heads: 4, num_kv_heads: 2}\n"  # vocab: tokenizer


def golf(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_the_job_takes_the_vocabulary_and_lineage_from_the_data(data_dir, tmp_path):
    no_vocab = ModelConfig(**{**TINY_MODEL, "vocab_size": None})
    job = TrainJob.prepare(data_dir, tmp_path / "run", no_vocab, TrainParams(**TINY_TRAIN))
    assert job.model_config.vocab_size == 400 and job.is_main
    assert job.parent == sha256_file(data_dir / "manifest.json")
    assert job.provenance["tokenizer_sha256"] == sha256_file(data_dir / "tokenizer.model")
    assert job.provenance["train_shards"] == list(job.data.shard_hashes)
    with pytest.raises(ConfigError, match="model.vocab_size is 512 but"):
        TrainJob.prepare(data_dir, tmp_path / "run",
                         ModelConfig(**{**TINY_MODEL, "vocab_size": 512}),
                         TrainParams(**TINY_TRAIN))


def test_swa_snapshots_feed_golf_average(data_dir, tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text(MODEL + "train: {max_steps: 8, max_wallclock_seconds: 0, batch_tokens: 512,\n"
                              "        seq_len: 64, warmdown_frac: 0.5, swa_every: 2,\n"
                              "        swa_lr_scale: 0.8, autocast: off}\n")
    run = tmp_path / "run"
    (run / "swa").mkdir(parents=True)
    (run / "swa" / "step_999999.safetensors").write_bytes(b"stale")  # from an earlier run
    r = golf("train", data_dir, "--out", run, "--params", params)
    assert r.exit_code == 0, r.output
    assert r.output.strip().splitlines()[-1] == f"params: {params} [train, model]"
    assert sorted(p.name for p in run.iterdir()) == ["ema.safetensors", "final.safetensors", "live",
                                                     "swa", "train.log", "train_metrics.json"]
    snaps = sorted(p.name for p in (run / "swa").iterdir())
    # LR scale < 0.8 from progress 0.6 on (steps 6..8 of 8): snapshots after steps 6 and 8.
    assert snaps == ["step_000006.safetensors", "step_000008.safetensors"]
    last = artifacts.load(run / "swa" / snaps[-1], expect="checkpoint")
    final = artifacts.load(run / "final.safetensors")
    assert final.model_config.vocab_size == 400  # filled in from the tokenizer
    assert all(torch.equal(last.tensors[k], final.tensors[k]) for k in final.tensors)
    assert last.provenance["weights"] == "swa:8"
    r = golf("average", *(run / "swa" / s for s in snaps), run / "ema.safetensors",
             "--out", tmp_path / "t.st")
    assert r.exit_code == 0, r.output


def test_cli_resume_validation_and_live_curves(data_dir, tmp_path, monkeypatch):
    params = tmp_path / "p.yaml"
    params.write_text(MODEL + "train: {max_steps: 6, max_wallclock_seconds: 0, batch_tokens: 512,\n"
                              "        seq_len: 64, schedule: steps, checkpoint_every: 2,\n"
                              "        val_every: 3, log_every: 2, autocast: off}\n")

    def train(run, *extra):
        return golf("train", data_dir, "--out", tmp_path / run, "--params", params, *extra)

    assert train("whole").exit_code == 0
    r = train("cut", "--resume")
    assert r.exit_code == 1 and "no resume state" in r.output
    real_log_step = LiveLog.log_step

    def crash_at_5(self, step, *a):
        if step == 5:
            raise KeyboardInterrupt
        real_log_step(self, step, *a)

    monkeypatch.setattr(LiveLog, "log_step", crash_at_5)
    assert train("cut").exit_code != 0
    monkeypatch.setattr(LiveLog, "log_step", real_log_step)
    r = train("cut", "--resume", "--set", "matrix_lr=0.5")
    assert r.exit_code == 1 and "different train.matrix_lr" in r.output
    assert train("cut", "--resume").exit_code == 0
    for name in ("final", "ema"):
        a, b = (artifacts.load(tmp_path / run / f"{name}.safetensors") for run in ("whole", "cut"))
        assert all(torch.equal(a.tensors[k], b.tensors[k]) for k in a.tensors), name
    assert not (tmp_path / "cut" / "resume").exists()
    curves = tmp_path / "whole" / "live" / "plots" / "metrics"
    assert [line.split("\t")[0] for line in (curves / "train" / "loss.tsv").read_text().split()
            [2::2]] == ["2", "4", "6"]  # header "step loss", then a row every log_every steps
    assert (curves / "val" / "bpb.tsv").read_text().count("\n") == 3  # header + steps 3 and 6
    metrics = json.loads((tmp_path / "whole" / "train_metrics.json").read_text())
    assert [v["step"] for v in metrics["validation"]] == [3, 6]
    assert set(metrics["validation"][0]) == {"step", "val_loss", "val_bpb"}


TRAIN = ("train: {max_steps: 6, max_wallclock_seconds: 0, batch_tokens: 512, seq_len: 64,\n"
         "        schedule: steps, warmdown_frac: 0.5, swa_every: 2, swa_lr_scale: 0.9,\n"
         "        log_every: 1, autocast: off}\n")


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in ("train_metrics.json", "train.log")}


def _fail_at_step(monkeypatch, at: int):
    """Training raises at step `at`, as a diverged run does."""
    from stages.errors import GolfError
    from stages.train import loop

    real = loop.optimizer_step

    def step(s, run, *args):
        if run.step + 1 == at:
            raise GolfError(f"training diverged at step {run.step} (planted)")
        return real(s, run, *args)

    monkeypatch.setattr(loop, "optimizer_step", step)


def test_a_failed_rerun_leaves_the_previous_run_as_it_was(data_dir, tmp_path, monkeypatch):
    """D4, P2: the new run is built beside the old one and moved in only once it has finished;
    a failed one leaves no curves behind, and files golf did not write are left alone."""
    params = tmp_path / "p.yaml"
    params.write_text(MODEL + TRAIN)
    run = tmp_path / "run"
    assert golf("train", data_dir, "--out", run, "--params", params).exit_code == 0
    (run / "notes.txt").write_text("mine")
    before = _files(run)
    assert "live/plots/metrics/train/loss.tsv" in before and "swa/step_000006.safetensors" in before
    with monkeypatch.context() as m:
        _fail_at_step(m, 5)
        r = golf("train", data_dir, "--out", run, "--params", params, "--set", "seed=3")
    assert r.exit_code == 1 and "diverged at step 4" in r.output
    assert _files(run) == before and not (run / "resume").exists()
    r = golf("train", data_dir, "--out", run, "--params", params, "--set", "seed=3")
    assert r.exit_code == 0, r.output
    after = _files(run)
    assert after["notes.txt"] == b"mine"
    assert after["final.safetensors"] != before["final.safetensors"]
    assert sorted(p.name for p in run.iterdir()) == ["ema.safetensors", "final.safetensors", "live",
                                                     "notes.txt", "swa", "train.log",
                                                     "train_metrics.json"]


def test_a_failed_first_run_leaves_nothing(data_dir, tmp_path, monkeypatch):
    """P2, S6: a diverged run, a missing resume state and a run stopped before its first step
    write nothing at all."""
    params = tmp_path / "p.yaml"
    params.write_text(MODEL + TRAIN)
    run = tmp_path / "run"
    with monkeypatch.context() as m:
        _fail_at_step(m, 3)
        assert golf("train", data_dir, "--out", run, "--params", params).exit_code == 1
    r = golf("train", data_dir, "--out", run, "--params", params, "--resume")
    assert r.exit_code == 1 and "no resume state" in r.output
    r = golf("train", data_dir, "--out", run, "--params", params, "--set",
             "max_wallclock_seconds=0.000000001")
    assert r.exit_code == 1
    assert "ended the run before its first step: nothing was trained" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]


def test_resume_after_a_kill_logs_each_step_once(data_dir, tmp_path, monkeypatch):
    """S5: rows logged after the last saved state are dropped when the run resumes."""
    params = tmp_path / "p.yaml"
    params.write_text(MODEL + TRAIN.replace("log_every: 1", "log_every: 1, checkpoint_every: 3"))
    run = tmp_path / "run"
    real = LiveLog.log_step

    def killed_at_5(self, step, *a):
        if step == 5:
            raise KeyboardInterrupt
        real(self, step, *a)

    with monkeypatch.context() as m:
        m.setattr(LiveLog, "log_step", killed_at_5)
        assert golf("train", data_dir, "--out", run, "--params", params).exit_code != 0
    staged = run / "resume" / "live" / "plots" / "metrics" / "train" / "loss.tsv"
    assert [line.split("\t")[0] for line in staged.read_text().split("\n")[1:-1]] == \
        ["1", "2", "3", "4"]  # step 4 was logged after the state saved at step 3
    assert golf("train", data_dir, "--out", run, "--params", params, "--resume").exit_code == 0
    for curve in ("loss", "lr_scale"):
        rows = (run / "live/plots/metrics/train" / f"{curve}.tsv").read_text().split("\n")[1:-1]
        assert [line.split("\t")[0] for line in rows] == ["1", "2", "3", "4", "5", "6"], curve


@pytest.mark.parametrize("setting, part", [
    ("train.batch_tokens=1000000000000", "a batch of 1,000,000,000,000 tokens"),
    ("model.model_dim=1048576", "parameters ("),
])
def test_a_run_that_cannot_fit_in_memory_is_refused_before_any_work(data_dir, tmp_path, setting,
                                                                    part):
    """T6: the estimate is stated, not a kernel OOM kill or an allocator traceback."""
    params = tmp_path / "p.yaml"
    params.write_text(MODEL + TRAIN)
    r = golf("train", data_dir, "--out", tmp_path / "run", "--params", params, "--set", setting)
    assert r.exit_code == 1, r.output
    assert r.output.startswith("Error: training needs at least ") and part in r.output
    assert len(r.output.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


@pytest.mark.parametrize("trick", ["header", "appended", "shifted"])
def test_training_refuses_validation_documents_whatever_holds_them(data_dir, tmp_path, trick):
    """L2: by content, not by file hash."""
    from stages.data.documents import ProvenanceError
    from tests.conftest import tampered_data

    folder = tampered_data(data_dir, tmp_path / "data", trick)
    with pytest.raises(ProvenanceError, match="are validation documents"):
        TrainJob.prepare(folder, tmp_path / "run", ModelConfig(**TINY_MODEL),
                         TrainParams(**TINY_TRAIN))
    assert not (tmp_path / "run").exists()


def test_one_run_at_a_time_per_run_folder(data_dir, tmp_path):
    """A second `golf train` into a folder being written is refused, not interleaved."""
    import os

    from stages.files import OutputError, lock

    staging = tmp_path / "run" / "resume"
    staging.mkdir(parents=True)
    fd = lock(staging)
    try:
        job = TrainJob.prepare(data_dir, tmp_path / "run", ModelConfig(**TINY_MODEL),
                               TrainParams(**{**TINY_TRAIN, "max_steps": 2}))
        with pytest.raises(OutputError, match="being written by another golf process"):
            job.run()
    finally:
        os.close(fd)


def test_the_run_log_holds_what_reviewers_look_for(tmp_path, data_dir):
    """train.log: hyperparameters, step lines, the stop line and the training time in the ledger,
    in the format train_gpt.py writes (stages/train/runlog.py)."""
    from stages.ledger import parse_ledger

    run = tmp_path / "run"
    params = tmp_path / "p.yaml"
    params.write_text(MODEL + "train: {max_steps: 8, max_wallclock_seconds: 0, batch_tokens: 512,\n"
                              "        seq_len: 64, log_every: 4, autocast: off}\n")
    r = golf("train", data_dir, "--out", run, "--params", params)
    assert r.exit_code == 0, r.output
    log = (run / "train.log").read_text()
    assert log.startswith("golf ") and "hyperparameters train: {" in log
    steps = [line for line in log.splitlines() if line.startswith("step:")]
    assert steps and steps[-1].startswith("step:8/8 train_loss:")
    assert "stopped_by: max_steps steps: 8 " in log
    assert [(phase, budget) for phase, _, budget in parse_ledger(log)] == [("train_loop", "train")]
