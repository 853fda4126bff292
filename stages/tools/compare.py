"""`golf compare`: is a change a real improvement across seeds? (the challenge's acceptance rule)

A new record must lower the mean validation loss by at least 0.005 nats with p < 0.01 (the
challenge's README).
Given the eval metrics of several seeds of a candidate and of a baseline, this reports mean and sample
std of val_loss (nats) and val_bpb, and a one-sided Welch t-test (unequal variances) of

    H0: mean_baseline - mean_candidate <= min_gain     vs     H1: ... > min_gain

by testing candidate + min_gain against baseline. With min_gain = 0 the same test answers "is it
better at all". The verdict holds in bpb too: every run must have scored the same validation tokens
and bytes, so bpb is nats times one constant and the test statistics are the same.

Beside it, the rule the leaderboard has applied since PR #1902: better at all (one-sided Welch,
no margin) at p < 0.25, the baseline being the previous frontier row's seeds. For each rule the
report gives how many seeds a side would need for it to hold, at the observed means and spreads.

The runs must be independent and comparable: two files of the same eval (a copy, or one model
scored twice) are refused, as are runs scored with different tokenizers or on other validation data,
and values that are not finite numbers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from stages.errors import GolfError

MIN_GAIN_NATS = 0.005
ALPHA = 0.01
LEADERBOARD_ALPHA = 0.25  # PR #1902: p < 0.25 against the previous frontier row, no margin
MAX_SEEDS = 1000
VOLATILE = ("eval_seconds", "tokens_per_s")  # differ between two evals of the same model


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


def seeds_needed(cand: tuple[float, float], base: tuple[float, float], margin: float,
                 alpha: float) -> int | None:
    """The fewest seeds a side (n each) for which the one-sided Welch test of a gain above `margin`
    would give p < alpha, at the observed (mean, std) of each side; None when no number would (the
    observed gain is not above the margin)."""
    from scipy import stats

    delta = base[0] - cand[0] - margin
    if delta <= 0:
        return None
    var = cand[1] ** 2 + base[1] ** 2
    if var == 0:
        return 2
    for n in range(2, MAX_SEEDS + 1):
        df = var ** 2 * (n - 1) / (cand[1] ** 4 + base[1] ** 4)
        if stats.t.sf(delta / math.sqrt(var / n), df) < alpha:
            return n
    return None


def _common(runs: list[dict], key: str, what: str = "the same validation data") -> object:
    values = {repr(r.get(key)) for r in runs}
    if len(values) != 1:
        raise GolfError(f"the runs did not score {what}: '{key}' differs "
                        f"({', '.join(sorted(values))})")
    return runs[0].get(key)


def _identity(run: dict) -> tuple[str | None, str]:
    """(the scored model's hash, the eval's content without timings and paths)."""
    model = run.get("model") if isinstance(run.get("model"), dict) else {}
    content = {k: v for k, v in run.items() if k not in VOLATILE}
    if model:
        content["model"] = {k: v for k, v in model.items() if k != "path"}
    return model.get("file_sha256"), json.dumps(content, sort_keys=True)


def check_independent(runs: list[dict], names: list[str]) -> None:
    """Refuse a run counted twice: the same eval content, or the same model scored twice."""
    models: dict[str, str] = {}
    contents: dict[str, str] = {}
    for run, name in zip(runs, names, strict=True):
        model, content = _identity(run)
        if content in contents:
            raise GolfError(f"{name} and {contents[content]} are the same eval: one run would "
                            f"count as two seeds")
        if model and model in models:
            raise GolfError(f"{name} and {models[model]} score the same model ({model[:19]}…): "
                            f"one run would count as two seeds")
        contents[content] = name
        if model:
            models[model] = name


def _check_numbers(runs: list[dict], names: list[str]) -> None:
    for run, name in zip(runs, names, strict=True):
        for key in ("val_loss", "val_bpb", "tokens", "bytes"):
            value = run.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise GolfError(f"{name} has no numeric '{key}'; pass the JSON written by "
                                f"`golf eval --out`")
            if not math.isfinite(value) or (key in ("tokens", "bytes") and value <= 0):
                raise GolfError(f"{name}: '{key}' is {value}, not a usable result")


def compare(candidate: list[dict], baseline: list[dict], *, min_gain_nats: float = MIN_GAIN_NATS,
            alpha: float = ALPHA, names: list[str] | None = None) -> dict:
    """Compare eval metrics (`golf eval` JSON) of candidate seeds against baseline seeds.

    Args:
        candidate, baseline: one metrics dict per seed, each with val_loss, val_bpb, tokens, bytes.
        min_gain_nats: the improvement in mean val_loss that must hold.
        alpha: the significance level.
        names: what to call each run in errors (candidate's, then baseline's; files, say).

    Returns:
        A dict with per-side summaries, the mean deltas (positive = candidate better), the Welch
        tests for "better at all" and "better by min_gain_nats", `accepted` (the README's rule),
        and `rules`: the README's and the leaderboard's, each with its verdict and the seeds a
        side it would need.
    """
    runs = candidate + baseline
    names = names or [f"candidate run {i + 1}" for i in range(len(candidate))] + \
        [f"baseline run {i + 1}" for i in range(len(baseline))]
    for side, side_runs in (("candidate", candidate), ("baseline", baseline)):
        if len(side_runs) < 2:
            raise GolfError(f"need at least 2 {side} runs (seeds) for a t-test, got "
                            f"{len(side_runs)}")
    _check_numbers(runs, names)
    check_independent(runs, names)
    _common(runs, "tokenizer_sha256", "with the same tokenizer")
    tokens = _common(runs, "tokens")
    n_bytes = _common(runs, "bytes")
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
    observed = [(s["val_loss"]["mean"], s["val_loss"]["std"]) for s in (cand, base)]
    rules = {
        "readme": {"rule": f"a gain of at least {min_gain_nats} nats at p < {alpha} (one-sided "
                           f"Welch)", "p": margin.p, "accepted": accepted,
                   "seeds_needed": seeds_needed(*observed, min_gain_nats, alpha)},
        "leaderboard": {"rule": f"better at p < {LEADERBOARD_ALPHA} against the previous "
                                f"frontier row (one-sided Welch; PR #1902)", "p": any_gain.p,
                        "accepted": any_gain.p < LEADERBOARD_ALPHA,
                        "seeds_needed": seeds_needed(*observed, 0.0, LEADERBOARD_ALPHA)},
    }
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
        "rules": rules,
    }


def read_metrics(path: str | Path) -> dict:
    """A `golf eval --out` JSON file."""
    try:
        metrics = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GolfError(f"{path}: not JSON ({e})") from None
    if not isinstance(metrics, dict):
        raise GolfError(f"{path}: expected the JSON object `golf eval --out` writes, got "
                        f"{type(metrics).__name__}")
    return metrics


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
    board = result["rules"]["leaderboard"]
    lines.append(f"{'ACCEPT' if board['accepted'] else 'REJECT'} by the leaderboard's rule "
                 f"(PR #1902: better at p < {LEADERBOARD_ALPHA} against the previous frontier "
                 f"row): p = {board['p']:.3g}")
    needed = [f"{name} {r['seeds_needed'] if r['seeds_needed'] else 'none would do'}"
              for name, r in (("README rule", result["rules"]["readme"]), ("leaderboard", board))]
    lines.append(f"seeds a side at the observed spread: {', '.join(needed)}")
    return lines
