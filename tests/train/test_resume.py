"""Resume: an interrupted run continues bit for bit, only under the same params and data, and the
resume state is dropped only once the final checkpoints are on disk."""

import pytest

from stages import artifacts
from stages.model.config import ModelConfig
from stages.params import to_dict
from stages.train import resume
from stages.train.loop import Hooks
from stages.train.params import TrainParams
from stages.train.run import TrainJob
from tests.conftest import TINY_MODEL, TINY_TRAIN, run_train, same_tensors

BASE = dict(schedule="steps", checkpoint_every=3)


class _Interrupt(Exception):
    pass


def _crash_at(step):
    def on_step(info):
        if info.step == step:
            raise _Interrupt
    return Hooks(on_step=on_step)


@pytest.mark.parametrize("stream", [{"sampler": "random"},
                                    {"sampler": "sequential", "doc_attention": True}],
                         ids=["random", "sequential"])
def test_interrupted_and_resumed_run_ends_where_an_uninterrupted_run_does(data_dir, tmp_path,
                                                                          stream):
    base = {**BASE, **stream}
    whole = run_train(data_dir, **base, resume_dir=tmp_path / "a")
    # train() leaves the state in place (TrainJob.run drops it once the checkpoints are written).
    assert (tmp_path / "a" / resume.STATE_FILE).is_file()
    with pytest.raises(_Interrupt):
        run_train(data_dir, **base, resume_dir=tmp_path / "b", hooks=_crash_at(5))
    assert (tmp_path / "b" / resume.STATE_FILE).is_file()  # saved after step 3
    resumed = run_train(data_dir, **base, resume_dir=tmp_path / "b", resume=True)
    assert resumed.metrics["steps"] == whole.metrics["steps"] == 8
    assert resumed.metrics["final_train_loss"] == whole.metrics["final_train_loss"]
    assert same_tensors(whole.final.tensors, resumed.final.tensors)
    assert same_tensors(whole.ema.tensors, resumed.ema.tensors)


def test_resume_refuses_other_params(data_dir, tmp_path):
    with pytest.raises(_Interrupt):
        run_train(data_dir, schedule="steps", checkpoint_every=1, resume_dir=tmp_path,
                  hooks=_crash_at(1))
    with pytest.raises(resume.ResumeError, match="different train.matrix_lr"):
        run_train(data_dir, schedule="steps", checkpoint_every=1, matrix_lr=0.5,
                  resume_dir=tmp_path, resume=True)
    with pytest.raises(resume.ResumeError, match="no resume state"):
        run_train(data_dir, schedule="steps", resume_dir=tmp_path / "empty", resume=True)


def test_resume_fingerprint_ignores_only_keys_that_cannot_change_weights():
    def fp(**kw):
        return resume.fingerprint({"model": to_dict(ModelConfig(**TINY_MODEL)),
                                   "train": to_dict(TrainParams(**kw))}, ["sha256:a"])

    assert resume.differing_keys(fp(), fp(val_every=5, log_every=3, checkpoint_every=7)) == []
    assert resume.differing_keys(fp(), fp(seed=1)) == ["train.seed"]
    other_data = resume.fingerprint({"model": {}, "train": {}}, ["sha256:b"])
    assert "train_shards" in resume.differing_keys(fp(), other_data)


def test_the_job_drops_the_state_only_after_writing_the_checkpoints(data_dir, tmp_path,
                                                                     monkeypatch):
    params = TrainParams(**{**TINY_TRAIN, "max_steps": 4, **BASE})
    job = TrainJob.prepare(data_dir, tmp_path / "run", ModelConfig(**TINY_MODEL), params)
    state = tmp_path / "run" / "resume" / resume.STATE_FILE
    real_save = artifacts.save

    def save_then_look(artifact, path):
        assert state.is_file(), f"resume state gone before {path.name} was written"
        return real_save(artifact, path)

    monkeypatch.setattr(artifacts, "save", save_then_look)
    metrics = job.run()
    assert metrics["steps"] == 4
    assert (tmp_path / "run" / "final.safetensors").is_file()
    assert not (tmp_path / "run" / "resume").exists()
