"""`golf audit` passes a legal run and catches each illegal pattern, planted here."""

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from golfcli.main import cli
from stages import artifacts
from stages.budget import LIMIT_BYTES, code_bytes
from stages.data.shards import load_val_tokens
from stages.eval.audit import audit, check_size, format_checks
from stages.eval.evaluate import load_model
from stages.eval.params import EvalParams
from stages.eval.scoring import Scores, model_log_probs, plan_windows, score_windows
from stages.eval.ttt import ScoredChunks, TTTTrainer, plan_chunks
from stages.model import gpt
from stages.model.config import ModelConfig
from stages.model.gpt import GPT, build_model
from tests.conftest import TINY_MODEL

SLIDING = EvalParams(mode="sliding", seq_len=64, stride=32, batch_seqs=8)
TTT = EvalParams(mode="ttt", seq_len=64, stride=32, batch_seqs=8, ttt_chunk_tokens=64,
                 ttt_epochs=2, ttt_lr=0.02)
PREFIX = 256


def run_audit(model, data_dir, params, **kw):
    checks = audit(model, data_dir, params, prefix_tokens=PREFIX, samples=3, **kw)
    return {c.name: c for c in checks}


@pytest.fixture(scope="module")
def legal(tiny_final):
    return tiny_final


@pytest.fixture(scope="module")
def val_hash(data_dir):
    return load_val_tokens(data_dir).shard_hashes[0]


def with_provenance(path, tmp_path, **changes):
    """A copy of the artifact at `path` whose recorded provenance has `changes`."""
    art = artifacts.load(path)
    art.provenance = {**art.provenance, **changes}
    out = tmp_path / path.name
    artifacts.save(art, out)
    return load_model(out)


@pytest.mark.parametrize("params", [SLIDING, TTT, EvalParams(mode="sliding", seq_len=64, stride=16,
                                                             doc_isolated=True)],
                         ids=["sliding", "ttt", "isolated"])
def test_a_legal_run_passes_every_check(legal, data_dir, params):
    checks = run_audit(legal, data_dir, params)
    assert [n for n, c in checks.items() if not c.passed] == [], checks
    assert len(checks) == 7


def test_a_pre_quantisation_fine_tune_on_validation_is_caught(tiny_run, data_dir, val_hash, tmp_path):
    run, _ = tiny_run
    model = with_provenance(run / "final.safetensors", tmp_path,
                            train_shards=["sha256:" + "0" * 64, val_hash])
    checks = run_audit(model, data_dir, EvalParams(seq_len=64))
    assert not checks["provenance"].passed
    assert "provenance.train_shards[1]" in checks["provenance"].detail


def test_calibration_on_validation_shards_is_caught(quantized_path, data_dir, val_hash, tmp_path):
    model = with_provenance(quantized_path, tmp_path,
                            calibration={"source": "train_shards", "shards": [val_hash], "seed": 0})
    checks = run_audit(model, data_dir, EvalParams(seq_len=64))
    assert not checks["provenance"].passed
    assert "provenance.calibration.shards[0]" in checks["provenance"].detail


def test_adapt_then_score_ttt_is_caught(legal, data_dir):
    """A TTT loop that trains on each chunk (twice) before scoring it."""

    def adapt_then_score(tokens, probes):
        net = build_model(legal.config, legal.state)
        scores = Scores.empty(tokens.numel() - 1)
        chunks = plan_chunks(tokens.numpy(), TTT)
        trainer = TTTTrainer(net, TTT, len(chunks), scores)
        builder = ScoredChunks(chunks, tokens, TTT.seq_len, None, scores)
        for chunk in chunks:
            trainer.step(builder._training_chunk(chunk))  # deliberately before the scoring
            score_windows(model_log_probs(net), tokens, chunk.windows, 8, scores, probes)
            scores.events.append(("score", chunk.index, [w.scored for w in chunk.windows]))
        return scores

    checks = run_audit(legal, data_dir, TTT, evaluator=adapt_then_score)
    assert not checks["score before update"].passed
    assert "before it was scored" in checks["score before update"].detail
    assert not checks["causality"].passed


def test_a_cache_keyed_on_the_target_is_caught(legal, data_dir):
    """A scorer that boosts the target token's logit (an n-gram tilt gated on the target)."""

    def peeking(tokens, probes):
        net = build_model(legal.config, legal.state).eval()

        def predict(x, y):
            boost = 2.0 * F.one_hot(y, legal.config.vocab_size).float()
            return F.log_softmax(net(x).float() + boost, dim=-1)

        scores = Scores.empty(tokens.numel() - 1)
        windows = plan_windows(tokens.numpy(), SLIDING.seq_len, SLIDING.stride, False)
        score_windows(predict, tokens, windows, 8, scores, probes)
        return scores

    checks = run_audit(legal, data_dir, SLIDING, evaluator=peeking)
    assert not checks["causality"].passed
    assert "distribution at" in checks["causality"].detail
    assert checks["normalisation"].passed  # still a distribution, just an illegal one


@pytest.fixture(scope="module")
def smear_model(tmp_path_factory):
    """A checkpoint with an active SmearGate (lambda 1, not the identity of a fresh init)."""
    torch.manual_seed(0)
    net = GPT(ModelConfig(**TINY_MODEL, smear_gate=True))
    with torch.no_grad():
        net.smear_lambda.fill_(1.0)
        net.smear_w.normal_()
    path = tmp_path_factory.mktemp("smear") / "smear.safetensors"
    artifacts.save(artifacts.Artifact("checkpoint", dict(net.state_dict()), net.config), path)
    return load_model(path)


def test_a_smeargate_without_the_bos_mask_is_caught(smear_model, data_dir, monkeypatch):
    params = EvalParams(mode="sliding", seq_len=64, stride=32, doc_isolated=True)
    assert run_audit(smear_model, data_dir, params)["document isolation"].passed  # masked: fine

    def smear_without_mask(x, idx, w, lam):
        gate = torch.sigmoid(x[..., :12] @ w.to(x.dtype))[..., None]
        return x + lam.to(x.dtype) * gate * F.pad(x[:, :-1], (0, 0, 1, 0))

    monkeypatch.setattr(gpt, "smear", smear_without_mask)
    check = run_audit(smear_model, data_dir, params)["document isolation"]
    assert not check.passed and "SmearGate" in check.detail


def test_a_scorer_that_skips_targets_is_caught(legal, data_dir):
    def skipping(tokens, probes):
        scores = Scores.empty(tokens.numel() - 1)
        net = build_model(legal.config, legal.state).eval()
        windows = plan_windows(tokens.numpy(), 64, 64, False)[1:]  # drops the first window
        score_windows(model_log_probs(net), tokens, windows, 8, scores, probes | {0})
        return scores

    checks = run_audit(legal, data_dir, EvalParams(seq_len=64), evaluator=skipping)
    assert not checks["score before update"].passed


def test_cli_prints_the_table_writes_json_and_exits_by_the_verdict(tiny_run, data_dir, val_hash,
                                                                   tmp_path):
    run, _ = tiny_run
    args = ["--data", str(data_dir), "--mode", "sliding", "--set", "seq_len=64", "--set",
            "stride=32", "--prefix-tokens", str(PREFIX), "--samples", "2"]
    out = tmp_path / "audit.json"
    ok = CliRunner().invoke(cli, ["audit", str(run / "final.safetensors"), *args, "--json", str(out)])
    assert ok.exit_code == 0, ok.output
    assert "causality" in ok.output and "FAIL" not in ok.output
    report = json.loads(out.read_text())
    assert report["passed"] and len(report["checks"]) == 7
    bad = with_provenance(run / "final.safetensors", tmp_path, train_shards=[val_hash])
    failed = CliRunner().invoke(cli, ["audit", bad.info["path"], *args])
    assert failed.exit_code == 1 and "provenance" in failed.output and "FAIL" in failed.output


def test_a_model_over_the_size_limit_is_caught(legal):
    at_limit = LIMIT_BYTES - code_bytes()
    fits = dataclasses.replace(legal, info={**legal.info, "file_bytes": at_limit})
    over = dataclasses.replace(legal, info={**legal.info, "file_bytes": at_limit + 1})
    checks = [check_size(fits), check_size(over)]
    assert [c.passed for c in checks] == [True, False]
    lines = format_checks(checks)
    assert "PASS" in lines[0] and "FAIL" in lines[1] and f"/ {LIMIT_BYTES:,}" in lines[1]
