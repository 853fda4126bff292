import json

import numpy as np
import pytest

from stages.config import ConfigError, EvalParams
from stages.data import BOS_ID
from stages.evaluate import evaluate_path
from stages.scoring import Scores, plan_windows, sliding_windows


def coverage(windows, n_targets):
    counts = np.zeros(n_targets, dtype=int)
    for w in windows:
        lo, hi = w.scored
        counts[lo:hi] += 1
    return counts


@pytest.mark.parametrize("n,L,s", [(1, 8, 2), (7, 8, 2), (8, 8, 2), (9, 8, 2), (100, 8, 3),
                                   (101, 16, 16), (64, 16, 1), (50, 10, 7)])
def test_sliding_scores_every_target_once_with_the_spec_window_set(n, L, s):
    windows = sliding_windows(0, n, L, s)
    assert (coverage(windows, n) == 1).all()
    # Spec §6.2: starts 0, s, 2s, ... while ws + L - s < N.
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


def test_sliding_beats_chunked_and_scores_the_same_targets_and_bytes(tiny_run, data_dir):
    run, _ = tiny_run
    model = run / "final.safetensors"
    chunked = evaluate_path(model, data_dir, EvalParams(seq_len=64, batch_seqs=8))
    sliding = evaluate_path(model, data_dir, EvalParams(mode="sliding", seq_len=64, stride=16,
                                                        batch_seqs=8))
    isolated = evaluate_path(model, data_dir, EvalParams(mode="sliding", seq_len=64, stride=16,
                                                         batch_seqs=8, doc_isolated=True))
    manifest = json.loads((data_dir / "manifest.json").read_text())
    for m in (chunked, sliding, isolated):
        assert m["tokens"] == manifest["val"]["tokens"] - 1
        assert m["bytes"] == manifest["val"]["text_bytes"]
        assert m["eval_seconds"] >= 0 and m["tokens_per_s"] > 0
    assert sliding["val_loss"] < chunked["val_loss"]  # more context for most targets
    assert sliding["mode"] == "sliding" and sliding["params"]["stride"] == 16
    assert isolated["val_loss"] != sliding["val_loss"]  # the isolation changed what was seen


def test_progress_counts_every_window(tiny_run, data_dir):
    run, _ = tiny_run
    seen, total = [], []
    evaluate_path(run / "final.safetensors", data_dir,
                  EvalParams(mode="sliding", seq_len=64, stride=32, batch_seqs=5),
                  on_progress=seen.append, on_start=total.append)
    assert total and sum(seen) == total[0]


def test_cli_mode_option_overrides_the_params(tiny_run, data_dir, tmp_path):
    from click.testing import CliRunner

    from golfcli.main import cli

    run, _ = tiny_run
    out = tmp_path / "m.json"
    args = ["eval", str(run / "final.safetensors"), "--data", str(data_dir), "--set", "seq_len=64"]
    r = CliRunner().invoke(cli, [*args, "--mode", "sliding", "--set", "stride=32", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "(sliding, " in r.output and json.loads(out.read_text())["mode"] == "sliding"
    bad = CliRunner().invoke(cli, [*args, "--mode", "sliding", "--set", "stride=0"])
    assert bad.exit_code == 1 and "eval.stride must be in [1, eval.seq_len = 64], got 0" in bad.output
