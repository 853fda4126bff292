"""`golf audit` passes a legal run and catches each illegal pattern, planted here."""

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from golfcli.main import cli
from stages import artifacts
from stages.budget import LIMIT_BYTES
from stages.data.shards import load_val_tokens
from stages.eval.audit import audit, check_size, format_checks
from stages.eval.evaluate import load_model
from stages.eval.params import EvalParams
from stages.eval.scoring import Scores, model_log_probs, plan_windows, score_windows
from stages.eval.ttt import ScoredChunks, plan_chunks
from stages.eval.ttt_global import TTTTrainer
from stages.model import gpt
from stages.model.config import ModelConfig
from stages.model.gpt import GPT, build_model
from tests.conftest import TINY_MODEL

SLIDING = EvalParams(mode="sliding", seq_len=64, stride=32, batch_seqs=8)
TTT = EvalParams(mode="ttt", seq_len=64, stride=32, batch_seqs=8, ttt_chunk_tokens=64,
                 ttt_epochs=2, ttt_lr=0.02)
LORA = EvalParams(mode="ttt", seq_len=64, batch_seqs=8, ttt_chunk_tokens=16, ttt_lora_rank=4,
                  ttt_optimizer="adamw", ttt_momentum=0.0, ttt_lr=0.01, ttt_epochs=1,
                  ttt_lora_batch_docs=2, ttt_phased_prefix_docs=2, ttt_phased_phases=2,
                  ttt_phased_chunk_tokens=64)
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
                                                             doc_isolated=True), LORA],
                         ids=["sliding", "ttt", "isolated", "lora-phased"])
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
            trainer.step(builder._training_chunk([chunk]))  # deliberately before the scoring
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
    code = 30_000
    at_limit = LIMIT_BYTES - code
    fits = dataclasses.replace(legal, info={**legal.info, "file_bytes": at_limit})
    over = dataclasses.replace(legal, info={**legal.info, "file_bytes": at_limit + 1})
    checks = [check_size(fits, code, 1), check_size(over, code, 1)]
    assert [c.passed for c in checks] == [True, False]
    lines = format_checks(checks)
    assert "PASS" in lines[0] and "FAIL" in lines[1] and f"/ {LIMIT_BYTES:,}" in lines[1]


# --------------------------------------------------------------------------------------------------
# Provenance by content, and checks that had nothing to probe (the reliability probe's L1-L6)
# --------------------------------------------------------------------------------------------------

def _set_provenance(path, out, provenance):
    art = artifacts.load(path)
    art.provenance = provenance
    artifacts.save(art, out)
    return load_model(out)


@pytest.fixture(scope="module")
def cheat_run(tmp_path_factory, data_dir):
    """A checkpoint trained on the validation documents: its folder holds the validation shard,
    one header word changed, as its only train shard, and no validation split of its own."""
    from stages.train.inputs import train_inputs
    from stages.train.loop import train
    from stages.train.params import TrainParams
    from tests.conftest import TINY_TRAIN

    folder = tmp_path_factory.mktemp("cheat") / "data"
    folder.mkdir()
    raw = bytearray((data_dir / "val_000000.bin").read_bytes())
    raw[40] ^= 1
    (folder / "train_000000.bin").write_bytes(bytes(raw))
    (folder / "tokenizer.model").write_bytes((data_dir / "tokenizer.model").read_bytes())
    inputs = train_inputs(folder, folder / "tokenizer.model", ModelConfig(**TINY_MODEL))
    result = train(inputs.data, inputs.model_config,
                   TrainParams(**{**TINY_TRAIN, "max_steps": 2}), parents={},
                   provenance=inputs.provenance)
    path = folder.parent / "cheat.safetensors"
    artifacts.save(result.final, path)
    return path


@pytest.mark.usefixtures("cached_bundles")
def test_a_val_trained_checkpoint_averaged_in_fails_through_the_pipeline(tiny_run, cheat_run,
                                                                         data_dir, tmp_path):
    """L1: average keeps every input's provenance, so the blob still says what it came from."""
    run, _ = tiny_run

    def golf(*args):
        return CliRunner().invoke(cli, [str(a) for a in args])

    steps = [("average", run / "final.safetensors", cheat_run, "--out", tmp_path / "avg.st",
              "--set", "weights=[0.001, 0.999]"),
             ("quantize", tmp_path / "avg.st", "--out", tmp_path / "q.st", "--set",
              "keep_float_max_numel=1024"),
             ("compress", tmp_path / "q.st", "--out", tmp_path / "m.golf")]
    for step in steps:
        r = golf(*step)
        assert r.exit_code == 0, r.output
    r = golf("audit", tmp_path / "m.golf", "--data", data_dir, "--set", "seq_len=64",
             "--prefix-tokens", PREFIX, "--samples", 1)
    assert r.exit_code == 1
    line = next(x for x in r.output.splitlines() if "provenance" in x)
    assert "FAIL" in line and "provenance.inputs[1].train_documents is not DATA_DIR's" in line


def test_a_checkpoint_trained_on_other_documents_fails(tiny_run, cheat_run, data_dir, tmp_path):
    """L2: the validation tokens under another header pass a file-hash check, not this one."""
    run, _ = tiny_run
    cheat = artifacts.load(cheat_run).provenance
    assert cheat["train_shards"][0] != load_val_tokens(data_dir).shard_hashes[0]
    model = with_provenance(run / "final.safetensors", tmp_path,
                            train_documents=cheat["train_documents"])
    check = run_audit(model, data_dir, EvalParams(seq_len=64))["provenance"]
    assert not check.passed and "is not DATA_DIR's train split" in check.detail


@pytest.mark.parametrize("trick", ["header", "appended", "shifted"])
def test_a_data_folder_with_validation_documents_in_train_fails(trick, tiny_run, data_dir,
                                                                tmp_path):
    """L2: audited against a folder whose train split hides validation documents, even a model
    whose record matches that split fails."""
    from stages.data.documents import document_set
    from stages.data.shards import load_train_tokens
    from tests.conftest import tampered_data

    run, _ = tiny_run
    folder = tampered_data(data_dir, tmp_path / "data", trick)
    record = document_set(load_train_tokens(folder)).record()
    model = with_provenance(run / "final.safetensors", tmp_path, train_documents=record)
    check = run_audit(model, folder, EvalParams(seq_len=64))["provenance"]
    assert not check.passed and "validation documents" in check.detail


@pytest.mark.parametrize("strip, message", [
    ({}, "no tokenizer recorded"),
    ({"train_documents": None}, "no record of the data it was made from by content"),
    ({"train_documents": {}}, "no record of the data it was made from by content"),
    ({"inputs": [{"tokenizer_sha256": "x"}]}, "provenance.inputs[0].train_documents"),
], ids=["all", "no documents", "empty documents", "an input without"])
def test_missing_or_empty_provenance_fails(strip, message, tiny_run, data_dir, tmp_path):
    """L3: no record of what the model was trained on is not a pass."""
    run, _ = tiny_run
    prov = artifacts.load(run / "final.safetensors").provenance
    kept = {} if not strip else {**prov, **strip}
    model = _set_provenance(run / "final.safetensors", tmp_path / "m.st", kept)
    check = run_audit(model, data_dir, EvalParams(seq_len=64))["provenance"]
    assert not check.passed and message in check.detail, check.detail


def test_a_data_folder_of_another_tokenizer_fails(legal, small_docs, tmp_path):
    """L4: the same vocabulary size is not the same tokenizer; another size is refused outright."""
    from stages.data.corpus import Corpus
    from stages.data.tokenize import TokenizeParams, tokenize
    from stages.errors import GolfError

    other = tmp_path / "other"
    tokenize(Corpus("other", small_docs[120:]), TokenizeParams(vocab_size=400), other)
    check = run_audit(legal, other, EvalParams(seq_len=64))["provenance"]
    assert not check.passed and "is not DATA_DIR's" in check.detail and "tokenizer" in check.detail
    larger = tmp_path / "larger"
    tokenize(Corpus("other", small_docs[120:]), TokenizeParams(vocab_size=512), larger)
    with pytest.raises(GolfError, match="the model has vocab 400 but .* has 512 pieces"):
        run_audit(legal, larger, EvalParams(seq_len=64))


def test_predictions_that_are_not_finite_fail(legal, data_dir):
    """L6: max(0.0, nan) == 0.0 let NaN pass causality and normalisation."""

    def nan_scores(tokens, probes):
        net = build_model(legal.config, legal.state).eval()

        def predict(x, y):
            return F.log_softmax(net(x).float(), dim=-1) * float("nan")

        scores = Scores.empty(tokens.numel() - 1)
        windows = plan_windows(tokens.numpy(), 64, 64, False)
        score_windows(predict, tokens, windows, 8, scores, probes)
        return scores

    checks = run_audit(legal, data_dir, EvalParams(seq_len=64), evaluator=nan_scores)
    for name in ("causality", "normalisation"):
        assert not checks[name].passed and "not finite" in checks[name].detail, name


def test_checks_with_nothing_to_probe_fail(legal, data_dir, tmp_path):
    """L6: a two-token validation split gave causality PASS with 0 changed tokens."""
    import shutil

    from stages.data.shards import BOS_ID, write_shard

    tiny = tmp_path / "tiny"
    shutil.copytree(data_dir, tiny)
    write_shard(tiny / "val_000000.bin", [BOS_ID, 42])
    checks = run_audit(legal, tiny, EvalParams(seq_len=64))
    assert not checks["causality"].passed and "nothing to probe" in checks["causality"].detail
    assert not checks["normalisation"].passed
    assert not checks["document isolation"].passed


def test_a_run_log_over_the_time_budget_fails(legal, data_dir):
    """With a run's log, the audit holds its ledger to the 600 s budgets (stages/ledger.py)."""
    from stages.ledger import ledger_line

    kw = dict(prefix_tokens=PREFIX, samples=2)
    params = EvalParams(seq_len=64)
    within = audit(legal, data_dir, params, log=ledger_line("train_loop", 580.0, "train"), **kw)
    over = audit(legal, data_dir, params, log=ledger_line("train_loop", 601.0, "train"), **kw)
    assert within[-1].name == over[-1].name == "time budget"
    assert within[-1].passed and not over[-1].passed
    assert len(audit(legal, data_dir, params, **kw)) == len(within) - 1  # only with a log

