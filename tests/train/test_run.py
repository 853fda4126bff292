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
                                                     "swa", "train_metrics.json"]
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
