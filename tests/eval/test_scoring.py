"""Windows over the validation stream: every target scored exactly once, sliding windows with the
context they promise, documents kept apart, and the probes the audit reads."""

import numpy as np
import pytest
import torch

from stages.data.shards import BOS_ID, load_val_tokens
from stages.eval.params import EvalParams
from stages.eval.scoring import (
    Scores,
    model_log_probs,
    plan_windows,
    score_windows,
    sliding_windows,
)
from stages.model.gpt import build_model
from stages.params import ConfigError


def coverage(windows, n_targets):
    counts = np.zeros(n_targets, dtype=int)
    for w in windows:
        lo, hi = w.scored
        counts[lo:hi] += 1
    return counts


@pytest.mark.parametrize("n,L,s", [(1, 8, 2), (7, 8, 2), (8, 8, 2), (9, 8, 2), (100, 8, 3),
                                   (101, 16, 16), (64, 16, 1), (50, 10, 7)])
def test_sliding_scores_every_target_once_with_the_documented_window_set(n, L, s):
    windows = sliding_windows(0, n, L, s)
    assert (coverage(windows, n) == 1).all()
    # Starts 0, s, 2s, ... while ws + L - s < N (stages/eval/scoring.py).
    assert [w.start for w in windows] == [ws for ws in range(0, n, s) if ws == 0 or ws + L - s < n]
    assert all(w.length <= L and w.start + w.length <= n for w in windows)
    # Every scored target after the first window has at least L - s tokens of context.
    assert all(w.score_from >= L - s for w in windows[1:])


def test_chunked_is_sliding_with_stride_equal_to_length():
    windows = sliding_windows(0, 100, 16, 16)
    assert [(w.start, w.length, w.score_from) for w in windows] == \
        [(s, min(16, 100 - s), 0) for s in range(0, 100, 16)]


def test_document_isolated_windows_never_span_a_bos():
    rng = np.random.default_rng(0)
    stream = rng.integers(2, 50, size=400)
    stream[[0, 37, 38, 150, 399]] = BOS_ID  # includes an empty document and a BOS as the last token
    windows = plan_windows(stream, 32, 8, doc_isolated=True)
    assert (coverage(windows, len(stream) - 1) == 1).all()
    for w in windows:
        inside = stream[w.start + 1:w.start + w.length]
        assert BOS_ID not in inside, f"window at {w.start} spans a BOS"


def test_double_scoring_is_refused():
    scores = Scores.empty(4)
    scores.commit(0, np.ones(3))
    scores.commit(2, np.ones(2))
    with pytest.raises(AssertionError, match="target 2 was scored 2 times"):
        scores.check_once()


def test_bad_stride_names_the_key():
    with pytest.raises(ConfigError, match="eval.stride must be in"):
        EvalParams(mode="sliding", seq_len=64, stride=65)
    with pytest.raises(ConfigError, match="eval.mode must be one of chunked, sliding, ttt"):
        EvalParams(mode="slide")


def test_probe_rows_are_full_distributions(tiny_final, data_dir):
    stream = load_val_tokens(data_dir).concatenated().astype(np.int64)[:129]
    tokens = torch.from_numpy(stream.copy())
    scores = Scores.empty(128)
    net = build_model(tiny_final.config, tiny_final.state).eval()
    score_windows(model_log_probs(net), tokens, plan_windows(stream, 64, 64, False), 4, scores,
                  frozenset({5, 100}))
    assert set(scores.probes) == {5, 100}
    assert scores.probes[5].shape == (tiny_final.config.vocab_size,)
    assert np.exp(scores.probes[100]).sum() == pytest.approx(1.0, abs=1e-4)
    assert scores.nll[100] == pytest.approx(-scores.probes[100][stream[101]], abs=1e-5)
