"""Check 7 of `golf audit`: documents stay apart, in the model and in the eval (see audit.py)."""

from __future__ import annotations

import numpy as np
import torch

from stages.data.shards import BOS_ID
from stages.eval.evaluate import LoadedModel
from stages.eval.params import EvalParams
from stages.eval.probes import TOLERANCE, Check, Evaluator, replace_token
from stages.model.gpt import build_model


def _first_block_input(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    seen = []
    handle = net.blocks[0].register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    try:
        with torch.inference_mode():
            net(x)
    finally:
        handle.remove()
    return seen[0]


def _first_boundary(stream: np.ndarray) -> int | None:
    """Index of the first BOS that has at least two tokens before it, if any."""
    found = [int(b) for b in np.flatnonzero(stream[2:] == BOS_ID) + 2]
    return found[0] if found else None


def _model_boundary(model: LoadedModel, stream: np.ndarray, b: int,
                    rng: np.random.Generator) -> tuple[bool, str]:
    lo, hi = max(0, b - 32), min(len(stream), b + 32)
    x = torch.from_numpy(stream[lo:hi].copy())
    moved = replace_token(x, b - 1 - lo, model.config.vocab_size, rng)
    net = build_model(model.config, model.state).eval()
    diff = (_first_block_input(net, x[None]) - _first_block_input(net, moved[None]))[0, b - lo:]
    diff = float(diff.abs().max())
    if not diff <= TOLERANCE:  # NaN included
        return False, (f"model: the input to the first block at the BOS at {b} depends on the "
                       f"previous document's last token (diff {diff:.3g}): something before "
                       f"attention, e.g. a SmearGate without its BOS mask, crosses documents")
    return True, "model: first-block input at a BOS independent of the previous document"


def _eval_boundary(evaluate: Evaluator, stream: np.ndarray, b: int, seq_len: int, vocab: int,
                   rng: np.random.Generator) -> tuple[bool, str]:
    """Score an excerpt holding the end of one document and the start of the next, twice."""
    bos = np.flatnonzero(stream == BOS_ID)
    a = max([int(p) for p in bos if p < b] + [b - seq_len, 0])
    end = min([int(p) for p in bos if p > b] + [b + seq_len, len(stream) - 1])
    excerpt = torch.from_numpy(stream[a:end + 1].copy())
    u = int(rng.integers(1, b - a))
    base = evaluate(excerpt, frozenset())
    moved = evaluate(replace_token(excerpt, u, vocab, rng), frozenset())
    diff = float(np.abs(base.nll[b - a:end - a] - moved.nll[b - a:end - a]).max())
    if not diff <= TOLERANCE:  # NaN included
        return False, (f"eval: changing token {a + u} of one document moved a loss of the next "
                       f"document (at {b}) by {diff:.3g}")
    return True, f"eval: losses of the document at {b} unchanged by its predecessor"


def check_isolation(model: LoadedModel, params: EvalParams, evaluate: Evaluator,
                    stream: np.ndarray, rng: np.random.Generator) -> Check:
    b = _first_boundary(stream)
    if b is None:
        return Check("document isolation", False,
                     "nothing to probe: no document boundary in the validation split")
    results = [_model_boundary(model, stream, b, rng)]
    if params.doc_isolated and params.mode != "ttt":
        results.append(_eval_boundary(evaluate, stream, b, params.seq_len,
                                      model.config.vocab_size, rng))
    else:
        results.append((True, "eval: documents share context in this mode (isolation not claimed)"))
    return Check("document isolation", all(ok for ok, _ in results),
                 "; ".join(text for _, text in results))
