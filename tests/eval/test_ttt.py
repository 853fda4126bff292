"""Score-first test-time training: chunks scored before they are trained on, never the last one;
zero LR scores like sliding windows; per-document LoRA adapts adapters only."""

import math

import numpy as np
import pytest
import torch

from stages.data.shards import BOS_ID, load_val_tokens
from stages.eval import ttt
from stages.eval.evaluate import evaluate_path, score_stream
from stages.eval.params import EvalParams
from stages.eval.scoring import Scores, Window, segments
from stages.eval.ttt import Chunk, ScoredChunks
from stages.eval.ttt_global import TTTTrainer, global_chunks
from stages.model.gpt import build_model

TTT = dict(mode="ttt", seq_len=64, stride=32, batch_seqs=8, ttt_chunk_tokens=128, ttt_epochs=2,
           ttt_lr=0.01)


@pytest.fixture(scope="module")
def model(tiny_final):
    return tiny_final


@pytest.fixture(scope="module")
def prefix(data_dir):
    """The first 641 validation tokens: 640 targets, five TTT chunks of 128."""
    stream = load_val_tokens(data_dir).concatenated().astype(np.int64)
    return torch.from_numpy(stream[:641].copy())


@pytest.fixture(scope="module")
def documents(data_dir):
    """Four short documents: the first 150 tokens (BOS included) of the first four of the split."""
    stream = load_val_tokens(data_dir).concatenated().astype(np.int64)
    starts = np.flatnonzero(stream == BOS_ID)[:4]
    return torch.from_numpy(np.concatenate([stream[s:s + 150] for s in starts]))


def test_scored_chunks_yield_only_scored_chunks_and_never_the_last():
    tokens = torch.arange(41) % 7
    windows = [Window(s, min(10, 40 - s), 0) for s in range(0, 40, 10)]
    chunks = global_chunks(windows, 40, 10)
    scores = Scores.empty(40)

    def score(step):
        for chunk in step:
            for w in chunk.windows:
                scores.commit(w.scored[0], np.zeros(w.length))

    yielded = []
    for item in ScoredChunks(chunks, tokens, 10, score, scores):
        (lo, hi), = item.spans
        assert (scores.counts[lo:hi] == 1).all()  # committed before it is handed out
        assert (scores.counts[hi:] == 0).all()  # and the next chunk not scored yet
        yielded.append(item.index)
    assert yielded == [0, 1, 2]
    assert [e[1] for e in scores.events] == [0, 1, 2, 3]


def test_trainer_takes_only_scored_chunks(model):
    net = build_model(model.config, model.state)
    trainer = TTTTrainer(net, EvalParams(**TTT), 4, Scores.empty(10))
    with pytest.raises(TypeError, match="only on chunks handed out by ScoredChunks"):
        trainer.step(torch.zeros(1, 8, dtype=torch.long))


def test_ttt_with_zero_lr_scores_like_sliding(model, prefix):
    frozen = score_stream(model, prefix, EvalParams(**{**TTT, "ttt_lr": 0.0}))
    sliding = score_stream(model, prefix, EvalParams(**{**TTT, "mode": "sliding"}))
    assert (frozen.counts == 1).all()
    np.testing.assert_allclose(frozen.nll, sliding.nll, rtol=1e-5, atol=1e-6)


def test_ttt_orders_scores_before_updates_and_leaves_the_artifact_alone(model, prefix):
    before = {k: v.clone() for k, v in model.state.items()}
    scores = score_stream(model, prefix, EvalParams(**TTT))
    assert all(torch.equal(before[k], model.state[k]) for k in before)
    kinds = [(e[0], e[1]) for e in scores.events]
    assert kinds[:4] == [("score", 0), ("update", 0), ("update", 0), ("score", 1)]
    assert kinds[-1] == ("score", 4) and ("update", 4) not in kinds  # the last chunk: scored only
    adapted = score_stream(model, prefix, EvalParams(**{**TTT, "ttt_lr": 0.0}))
    assert not np.array_equal(adapted.nll[128:], scores.nll[128:])  # the updates changed later scores
    np.testing.assert_allclose(adapted.nll[:128], scores.nll[:128], rtol=1e-5, atol=1e-6)


def test_frozen_blocks_stay_put(model, prefix):
    net = build_model(model.config, model.state)
    block0 = {k: v.clone() for k, v in net.blocks[0].state_dict().items()}
    block1 = {k: v.clone() for k, v in net.blocks[1].state_dict().items()}
    ttt.run_ttt(net, prefix, EvalParams(**{**TTT, "ttt_freeze_blocks": 1}), Scores.empty(640))
    assert all(torch.equal(v, net.blocks[0].state_dict()[k]) for k, v in block0.items())
    assert any(not torch.equal(v, net.blocks[1].state_dict()[k]) for k, v in block1.items())


def test_cosine_lr_across_chunks(model):
    net = build_model(model.config, model.state)
    trainer = TTTTrainer(net, EvalParams(**TTT), 5, Scores.empty(1))
    assert trainer.lr(0) == pytest.approx(0.01) and trainer.lr(4) == pytest.approx(0.0)
    assert trainer.lr(2) == pytest.approx(0.005)


def test_lora_ttt_adapts_adapters_only_and_removes_its_hooks(model, documents):
    params = EvalParams(**{**TTT, "ttt_lora_rank": 4, "ttt_chunk_tokens": 32, "ttt_epochs": 1,
                           "ttt_optimizer": "adamw", "ttt_lr": 0.01,
                           "ttt_lora_targets": ["q", "v", "o"]})
    net = build_model(model.config, model.state)
    scores = Scores.empty(documents.numel() - 1)
    ttt.run_ttt(net, documents, params, scores)
    assert (scores.counts == 1).all()
    assert any(e[0] == "update" for e in scores.events)
    assert all(torch.equal(v, model.state[k]) for k, v in net.state_dict().items())  # base frozen
    assert all(not m._forward_hooks for m in net.modules())
    # With B = 0 at every document start, each document's first chunk scores as without TTT.
    plain = score_stream(model, documents, EvalParams(mode="sliding", seq_len=64, stride=32,
                                                      doc_isolated=True))
    firsts = [(off, off + min(32, n)) for off, n in segments(documents.numpy(), True)]
    assert len(firsts) == 4
    for lo, hi in firsts:
        np.testing.assert_allclose(scores.nll[lo:hi], plain.nll[lo:hi], rtol=1e-5, atol=1e-6)
    assert not np.allclose(scores.nll, plain.nll)  # and the adapters did change later scores


def test_ttt_eval_reports_the_same_targets_and_bytes(tiny_run, data_dir):
    run, _ = tiny_run
    params = dict(seq_len=64, batch_seqs=16)
    chunked = evaluate_path(run / "final.safetensors", data_dir, EvalParams(**params))
    adapted = evaluate_path(run / "final.safetensors", data_dir,
                            EvalParams(**params, mode="ttt", stride=64, ttt_chunk_tokens=2048,
                                       ttt_epochs=1, ttt_lr=0.005))
    assert adapted["tokens"] == chunked["tokens"] and adapted["bytes"] == chunked["bytes"]
    assert adapted["ttt_updates"] == adapted["ttt_chunks"] - 1
    assert math.isfinite(adapted["val_bpb"]) and adapted["val_bpb"] < chunked["val_bpb"] + 0.05


def test_chunk_assignment_follows_the_first_scored_target():
    windows = [Window(0, 8, 0), Window(4, 8, 4), Window(8, 8, 4)]  # scored 0-7, 8-11, 12-15
    chunks = global_chunks(windows, 16, 10)
    assert [len(c.windows) for c in chunks] == [2, 1]
    assert chunks[0].train_span == (0, 10) and chunks[1].train_span == (10, 16)
    assert isinstance(chunks[1], Chunk) and not chunks[1].trainable
