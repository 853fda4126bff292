"""`golf compare`: is a change a real improvement across seeds? (the challenge's acceptance rule)

A new record must lower the mean validation loss by at least 0.005 nats with p < 0.01 (the
challenge's README).
Given the eval metrics of several seeds of a candidate and of a baseline, this reports mean and sample
std of val_loss (nats) and val_bpb, and a one-sided Welch t-test (unequal variances) of

    H0: mean_baseline - mean_candidate <= min_gain     vs     H1: ... > min_gain

by testing candidate + min_gain against baseline. With min_gain = 0 the same test answers "is it
better at all". The verdict holds in bpb too: every run must have scored the same validation tokens
and bytes, so bpb is nats times one constant and the test statistics are the same.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from stages.errors import GolfError

MIN_GAIN_NATS = 0.005
ALPHA = 0.01


@dataclass(frozen=True)
class Welch:
    t: float | None  # None when neither side varies (then the difference is exact)
    df: float | None
    p: float  # one-sided: P(T >= t) under H0, i.e. small when the candidate is better by the margin


def _mean_std(xs: list[float]) -> tuple[float, float]:
    mean = sum(xs) / len(xs)
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def welch_one_sided(candidate: list[float], baseline: list[float], margin: float) -> Welch:
    """One-sided Welch test that mean(baseline) - mean(candidate) > margin."""
    from scipy import stats  # imported here: only `compare` needs it

    shifted = [x + margin for x in candidate]
    if len(set(shifted)) == 1 and len(set(baseline)) == 1:
        # No variance on either side: the t statistic is undefined; the difference is exact.
        better = baseline[0] - shifted[0] > 0
        return Welch(None, None, 0.0 if better else 1.0)
    r = stats.ttest_ind(shifted, baseline, equal_var=False, alternative="less")
    # scipy tests shifted < baseline; report t with the sign of "baseline - shifted".
    return Welch(float(-r.statistic), float(r.df), float(r.pvalue))


def _common(runs: list[dict], key: str) -> object:
    values = {repr(r.get(key)) for r in runs}
    if len(values) != 1:
        raise GolfError(f"the runs did not score the same validation data: '{key}' differs "
                        f"({', '.join(sorted(values))})")
    return runs[0].get(key)


def compare(candidate: list[dict], baseline: list[dict], *, min_gain_nats: float = MIN_GAIN_NATS,
            alpha: float = ALPHA) -> dict:
    """Compare eval metrics (`golf eval` JSON) of candidate seeds against baseline seeds.

    Args:
        candidate, baseline: one metrics dict per seed, each with val_loss, val_bpb, tokens, bytes.
        min_gain_nats: the improvement in mean val_loss that must hold.
        alpha: the significance level.

    Returns:
        A dict with per-side summaries, the mean deltas (positive = candidate better), the Welch
        tests for "better at all" and "better by min_gain_nats", and `accepted`.
    """
    for side, runs in (("candidate", candidate), ("baseline", baseline)):
        if len(runs) < 2:
            raise GolfError(f"need at least 2 {side} runs (seeds) for a t-test, got {len(runs)}")
        for r in runs:
            for key in ("val_loss", "val_bpb", "tokens", "bytes"):
                if not isinstance(r.get(key), (int, float)):
                    raise GolfError(f"a {side} metrics file has no numeric '{key}'; "
                                    f"pass the JSON written by `golf eval --out`")
    tokens = _common(candidate + baseline, "tokens")
    n_bytes = _common(candidate + baseline, "bytes")
    bpb_per_nat = tokens / n_bytes / math.log(2)

    def summary(runs: list[dict]) -> dict:
        loss_mean, loss_std = _mean_std([r["val_loss"] for r in runs])
        bpb_mean, bpb_std = _mean_std([r["val_bpb"] for r in runs])
        return {"n": len(runs), "val_loss": {"mean": loss_mean, "std": loss_std},
                "val_bpb": {"mean": bpb_mean, "std": bpb_std}}

    cand, base = summary(candidate), summary(baseline)
    losses_c = [r["val_loss"] for r in candidate]
    losses_b = [r["val_loss"] for r in baseline]
    any_gain = welch_one_sided(losses_c, losses_b, 0.0)
    margin = welch_one_sided(losses_c, losses_b, min_gain_nats)
    delta = base["val_loss"]["mean"] - cand["val_loss"]["mean"]
    accepted = margin.p < alpha
    verdict = (f"{'ACCEPT' if accepted else 'REJECT'}: mean val_loss {delta:+.5f} nats better "
               f"({base['val_bpb']['mean'] - cand['val_bpb']['mean']:+.5f} bpb); "
               f"a gain of at least {min_gain_nats} nats {'holds' if accepted else 'does not hold'} "
               f"at p < {alpha} (p = {margin.p:.3g})")
    return {
        "candidate": cand,
        "baseline": base,
        "delta": {"val_loss": delta, "val_bpb": base["val_bpb"]["mean"] - cand["val_bpb"]["mean"]},
        "min_gain_nats": min_gain_nats,
        "min_gain_bpb": min_gain_nats * bpb_per_nat,
        "alpha": alpha,
        "welch_any_gain": vars(any_gain),
        "welch_min_gain": vars(margin),
        "accepted": accepted,
        "verdict": verdict,
    }


def read_metrics(path: str | Path) -> dict:
    """A `golf eval --out` JSON file."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise GolfError(f"{path}: not JSON ({e})") from None


def format_comparison(result: dict) -> list[str]:
    """Mean ± std per side, the any-gain p value, and the verdict."""
    lines = []
    for side in ("candidate", "baseline"):
        s = result[side]
        lines.append(f"{side:<9}  n={s['n']}  val_loss {s['val_loss']['mean']:.5f} ± "
                     f"{s['val_loss']['std']:.5f}  val_bpb {s['val_bpb']['mean']:.5f} ± "
                     f"{s['val_bpb']['std']:.5f}")
    lines.append(f"any gain   p = {result['welch_any_gain']['p']:.3g}")
    lines.append(result["verdict"])
    return lines
