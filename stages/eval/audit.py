"""`golf audit`: evidence that a score obeys the challenge's rules, checked by running the eval.

Each check runs the same scoring pass (`evaluate.score_stream`, TTT included) that produces the
reported number, on a short prefix of the validation stream so the whole audit takes seconds:

1. causality - at sampled positions u, change token u; the distribution predicted for every target
   t < u (the prediction of token u itself included: a scorer that peeks at its target fails here)
   and the loss of every target t < u - 1 must not move, unless t was scored after token u was (the
   event log's order: per-document LoRA and phased TTT score documents longest first, and what
   they learnt from a scored document legally reaches documents scored later). Under TTT this
   also catches training on a chunk before scoring it: the early targets of the chunk would then
   depend on the changed token.
2. normalisation - at the probed targets the full-vocabulary probabilities sum to 1 (within 1e-4),
   and the committed loss is -log of that distribution at the target.
3. score before update - the pass's event log (written by ScoredChunks and TTTTrainer) shows each
   chunk scored once, every update using only targets already scored and committed, and no update
   using a target of the last chunk scored; every target of the prefix is scored exactly once.
4. byte accounting - over the whole validation split, the byte total val_bpb divides by equals the
   UTF-8 length of the validation text for a lossless tokenizer (manifest.json). For a normalising
   tokenizer the table total, the decoded-text total and their difference are reported; a difference
   is expected there and is not a failure.
5. size - model bytes (the .golf blob; for another file its size, an upper bound) + counted code
   bytes <= 16,000,000.
6. provenance - what the artifact records it was made from (copied forward from stage to stage),
   held to DATA_DIR (provenance.py): no recorded hash is a validation shard's; the tokenizer is
   DATA_DIR's; every training (each averaged input's) and the calibration record, by content, the
   documents of DATA_DIR's train split, and those meet no validation document.
7. document isolation - two parts:
   - model: the input to the first block at a BOS must not depend on the token before it. This is
     the property that a packed (VarLen-style) evaluation and training rely on, and the one a
     SmearGate without its BOS mask breaks: it blends the previous document's last token into the
     BOS. It has to be checked on the model because golf isolates documents by windows that start
     at their BOS, so position 0 has no predecessor and an unmasked SmearGate cannot leak in this
     eval; a perturbation test through the eval alone would pass and hide the defect.
   - eval (with `eval.doc_isolated`, outside TTT, where updates carry earlier documents forward
     legally): changing a token of one document must not move any loss of the next document.

A check that had nothing to probe (no token to change, no distribution kept, no target, no
document boundary) FAILs, as does a probed prediction that is not finite: a pass is evidence, and
NaN compares as nothing. `audit` takes the scoring pass as an argument (`Evaluator`), so tests can
hand it illegal variants.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch

from stages.budget import LIMIT_BYTES
from stages.ledger import within_budgets
from stages.data.bpb import build_byte_table
from stages.data.shards import BOS_ID, ValTokens, find_tokenizer, load_tokenizer, load_val_tokens
from stages.errors import GolfError
from stages.eval.evaluate import LoadedModel, score_stream
from stages.eval.params import EvalParams
from stages.eval.provenance import provenance_check
from stages.eval.scoring import Scores, stream_target_bytes
from stages.files import sha256_file
from stages.eval.isolation import check_isolation
from stages.eval.probes import NORM_TOLERANCE, TOLERANCE, Check, Evaluator, replace_token

def default_evaluator(model: LoadedModel, params: EvalParams) -> Evaluator:
    """The pass `golf eval` runs with these params."""
    return lambda tokens, probes: score_stream(model, tokens, params, probes)


def audit_params(params: EvalParams, n_targets: int) -> EvalParams:
    """Params for the prefix: global TTT chunks shrunk so the prefix spans at least 4 chunks."""
    if params.mode == "ttt" and params.ttt_lora_rank == 0:
        return dataclasses.replace(params, ttt_chunk_tokens=min(params.ttt_chunk_tokens,
                                                                max(1, n_targets // 4)))
    return params


# ---------------------------------------------------------------------------------------------------
# 1-3: behaviour of the scoring pass on a prefix
# ---------------------------------------------------------------------------------------------------

def _perturbation_sites(tokens: np.ndarray, samples: int, rng: np.random.Generator) -> list[int]:
    """Distinct non-BOS positions spread over the prefix (never position 0 or 1)."""
    candidates = [u for u in range(2, len(tokens)) if tokens[u] != BOS_ID]
    picks = rng.choice(len(candidates), size=min(samples, len(candidates)), replace=False)
    return sorted(candidates[i] for i in picks)


def _not_finite(scores: Scores) -> str | None:
    """What of a pass's output is NaN or infinite, if anything."""
    bad = np.flatnonzero(~np.isfinite(scores.nll))
    if bad.size:
        return f"predictions are not finite (the loss of target {int(bad[0])} is " \
               f"{scores.nll[bad[0]]})"
    for t, row in sorted(scores.probes.items()):
        if not np.isfinite(row).all():
            return f"predictions are not finite (the distribution at target {t})"
    return None


def score_order(scores: Scores) -> np.ndarray:
    """When each target was scored: the index of its score event (0 for all without TTT)."""
    order = np.zeros(len(scores.counts), dtype=np.int64)
    for i, event in enumerate(e for e in scores.events if e[0] == "score"):
        for lo, hi in event[2]:
            order[lo:hi] = i
    return order


def check_causality(evaluate: Evaluator, tokens: torch.Tensor, vocab: int, samples: int,
                    rng: np.random.Generator) -> tuple[Check, Scores]:
    sites = _perturbation_sites(tokens.numpy(), samples, rng)
    probes = set()
    for u in sites:
        probes.update({u - 1, u - 2, int(rng.integers(0, u - 1))})
    probes = frozenset(probes)
    base = evaluate(tokens, probes)
    if not sites:
        return Check("causality", False, f"nothing to probe: no token to change among the first "
                                         f"{len(tokens)} validation tokens"), base
    worst, where = 0.0, ""
    order = score_order(base)
    for u in sites:
        # Token u may reach targets after it (as context) and, under TTT, targets scored after
        # it was (target u - 1 is token u). Nothing else: not an earlier target scored before or
        # with it (in stream order that is every earlier target).
        before = np.flatnonzero(order[:u] <= order[u - 1])
        moved = evaluate(replace_token(tokens, u, vocab, rng), probes)
        missing = sorted(probes - base.probes.keys() | probes - moved.probes.keys())
        if missing:
            return Check("causality", False, f"targets {missing[:5]} were never scored"), base
        bad = _not_finite(base) or _not_finite(moved)
        if bad:
            return Check("causality", False, bad), base
        diffs = [(float(np.abs(base.probes[t] - moved.probes[t]).max()), f"distribution at {t}")
                 for t in sorted(probes) if t < u and order[t] <= order[u - 1]]
        losses = before[before < u - 1]  # the loss of target u - 1 is -log p(token u)
        if len(losses):
            d = np.abs(base.nll[losses] - moved.nll[losses])
            diffs.append((float(d.max()), f"loss at {int(losses[d.argmax()])}"))
        for diff, what in diffs:
            if diff > worst:
                worst, where = diff, f"{what} moved by {diff:.3g} when token {u} changed"
    passed = worst <= TOLERANCE
    detail = (f"{len(sites)} changed tokens, {len(probes)} probed distributions and every earlier "
              f"loss unchanged (max diff {worst:.1e})" if passed else where)
    return Check("causality", passed, detail), base


def check_normalisation(base: Scores, tokens: torch.Tensor) -> Check:
    if not base.probes:
        return Check("normalisation", False, "nothing to probe: no distribution was kept")
    bad = _not_finite(base)
    if bad:
        return Check("normalisation", False, bad)
    worst_sum, worst_nll = 0.0, 0.0
    for t, row in base.probes.items():
        worst_sum = max(worst_sum, abs(float(np.exp(row).sum()) - 1))
        worst_nll = max(worst_nll, abs(-float(row[int(tokens[t + 1])]) - float(base.nll[t])))
    passed = bool(base.probes) and worst_sum <= NORM_TOLERANCE and worst_nll <= NORM_TOLERANCE
    return Check("normalisation", passed,
                 f"{len(base.probes)} distributions: |sum p - 1| <= {worst_sum:.1e}, "
                 f"|loss - (-log p[target])| <= {worst_nll:.1e}")


def check_score_before_update(base: Scores) -> Check:
    if not len(base.counts):
        return Check("score before update", False, "nothing to probe: no target was scored")
    if not (base.counts == 1).all():
        bad = int(np.flatnonzero(base.counts != 1)[0])
        return Check("score before update", False,
                     f"target {bad} scored {int(base.counts[bad])} times (must be exactly once)")
    scored = np.zeros(len(base.counts), dtype=bool)
    trained = np.zeros(len(base.counts), dtype=bool)
    seen: set = set()
    last: tuple = ()
    for event in base.events:
        kind, chunk, spans = event[0], event[1], event[2]
        if kind == "score":
            if chunk in seen:
                return Check("score before update", False, f"chunk {chunk} scored twice")
            seen.add(chunk)
            last = (chunk, spans)
            for lo, hi in spans:
                scored[lo:hi] = True
        elif kind == "update":
            for lo, hi in spans:
                if not scored[lo:hi].all():
                    first = lo + int(np.flatnonzero(~scored[lo:hi])[0])
                    return Check("score before update", False,
                                 f"update with chunk {chunk} used target {first} before it was "
                                 f"scored")
                trained[lo:hi] = True
    if not base.events:
        return Check("score before update", True,
                     f"no updates; all {len(base.counts)} targets scored exactly once")
    if any(trained[lo:hi].any() for lo, hi in last[1]):
        return Check("score before update", False, f"the last chunk ({last[0]}) was trained on")
    n_updates = sum(1 for e in base.events if e[0] == "update")
    return Check("score before update", True,
                 f"{len(seen)} chunks each scored once, {n_updates} updates on scored targets only, "
                 f"last chunk not trained on; all {len(base.counts)} targets scored exactly once")


# ---------------------------------------------------------------------------------------------------
# 4-6: the numbers and records behind the score
# ---------------------------------------------------------------------------------------------------

def _documents(stream: np.ndarray) -> Iterator[np.ndarray]:
    """The stream cut before each BOS."""
    cuts = np.flatnonzero(stream == BOS_ID)
    bounds = [0, *[int(c) for c in cuts if c > 0], len(stream)]
    for a, b in zip(bounds, bounds[1:], strict=False):
        yield stream[a:b]


def check_bytes(stream: np.ndarray, sp: spm.SentencePieceProcessor, data_dir: Path) -> Check:
    table_total = int(stream_target_bytes(torch.from_numpy(stream), build_byte_table(sp)).sum())
    decoded = sum(len(sp.decode([int(i) for i in d if i != BOS_ID]).encode("utf-8"))
                  for d in _documents(stream))
    manifest_path = data_dir / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
        text = None if manifest is None else int(manifest["val"]["text_bytes"])
    except (ValueError, KeyError, TypeError):
        raise GolfError(f"{manifest_path}: not a golf data manifest (val.text_bytes)") from None
    if manifest is None:
        return Check("byte accounting", True,
                     f"byte table {table_total:,}, decoded text {decoded:,} "
                     f"(difference {table_total - decoded:+,}); no manifest.json with the raw text "
                     f"length, so nothing to hold the table to (not a failure)")
    tokenizer = manifest.get("tokenizer")
    if isinstance(tokenizer, dict) and tokenizer.get("lossless", False):
        return Check("byte accounting", table_total == text,
                     f"byte table {table_total:,} vs validation text {text:,} bytes (lossless "
                     f"tokenizer: must be equal)")
    return Check("byte accounting", True,
                 f"normalising tokenizer: byte table {table_total:,}, decoded text {decoded:,}, "
                 f"raw text {text:,} (table - raw {table_total - text:+,}); the table counts the "
                 f"normalised text, so a difference is expected and not a failure by itself")


def check_size(model: LoadedModel, code_bytes: int | None, tokenizer_bytes: int) -> Check:
    """Model + counted code (the train_gpt.py that would ship, measured by the caller)."""
    model_bytes = int(model.info["file_bytes"])
    what = "blob" if "blob_codec" in model.info else "file (not a blob: an upper bound)"
    if code_bytes is None:
        return Check("size", model_bytes <= LIMIT_BYTES,
                     f"model {what} {model_bytes:,} / {LIMIT_BYTES:,}; no code size given, so "
                     f"the model alone is counted")
    total = model_bytes + code_bytes
    return Check("size", total <= LIMIT_BYTES,
                 f"model {what} {model_bytes:,} + code (train_gpt.py) {code_bytes:,} = "
                 f"{total:,} / {LIMIT_BYTES:,}; tokenizer {tokenizer_bytes:,} bytes beside it")


def check_provenance(model: LoadedModel, data_dir: Path, val: ValTokens) -> Check:
    tokenizer_sha = sha256_file(find_tokenizer(data_dir))
    return Check("provenance", *provenance_check(model, data_dir, val, tokenizer_sha))


# ---------------------------------------------------------------------------------------------------
# The audit
# ---------------------------------------------------------------------------------------------------

def audit(model: LoadedModel, data_dir: str | Path, params: EvalParams, *,
          evaluator: Evaluator | None = None, prefix_tokens: int = 0, samples: int = 4,
          seed: int = 0, code_bytes: int | None = None, log: str | None = None) -> list[Check]:
    """Run every check; `evaluator` defaults to the pass `golf eval` runs with `params`.

    `prefix_tokens` (0 = 4 x seq_len) is the length of the validation prefix the behavioural checks
    run on; `samples` is how many tokens the causality check changes; `code_bytes` is the size of
    the train_gpt.py that would ship (stages/submit/bundle.py); with a run's `log`, its ledger is
    checked against the 600 s train and eval budgets too (stages/ledger.py).
    """
    data_dir = Path(data_dir)
    sp = load_tokenizer(find_tokenizer(data_dir))
    if sp.get_piece_size() != model.config.vocab_size:
        raise GolfError(f"the model has vocab {model.config.vocab_size} but {data_dir}'s tokenizer "
                        f"has {sp.get_piece_size()} pieces: not the model's data")
    val = load_val_tokens(data_dir, model.config.vocab_size)
    stream = val.concatenated().astype(np.int64)
    if len(stream) < 2:
        raise GolfError(f"{data_dir}: the validation split has fewer than two tokens")
    n = min(len(stream), (prefix_tokens or 4 * params.seq_len) + 1)
    tokens = torch.from_numpy(stream[:n].copy())
    params = audit_params(params, n - 1)
    evaluate = evaluator or default_evaluator(model, params)
    rng = np.random.default_rng(seed)
    causality, base = check_causality(evaluate, tokens, model.config.vocab_size, samples, rng)
    scope = f" on the first {n - 1:,} validation targets"
    if params.mode == "ttt" and params.ttt_lora_rank == 0:
        scope += f", ttt_chunk_tokens {params.ttt_chunk_tokens} so that TTT updates happen there"
    causality = dataclasses.replace(causality, detail=causality.detail + scope)
    time_budget = [Check("time budget", *within_budgets(log))] if log is not None else []
    return [
        causality,
        check_normalisation(base, tokens),
        check_score_before_update(base),
        check_bytes(stream, sp, data_dir),
        check_size(model, code_bytes, find_tokenizer(data_dir).stat().st_size),
        check_provenance(model, data_dir, val),
        check_isolation(model, params, evaluate, stream, rng),
        *time_budget,
    ]


def report(checks: list[Check], params: EvalParams) -> dict:
    """The JSON written by `golf audit --json`."""
    return {"passed": all(c.passed for c in checks), "mode": params.mode,
            "checks": [dataclasses.asdict(c) for c in checks]}


def format_checks(checks: list[Check]) -> list[str]:
    """One line per check: name, PASS/FAIL, detail."""
    width = max(len(c.name) for c in checks)
    return [f"  {c.name:<{width}}  {'PASS' if c.passed else 'FAIL'}  {c.detail}" for c in checks]
