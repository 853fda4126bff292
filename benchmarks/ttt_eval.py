"""The best preset's eval (phased + per-document LoRA TTT) at CPU scale, and what it projects to on
the full validation set on 8 GPUs.

    python benchmarks/ttt_eval.py [--width 128] [--data data/tokens] [--threads 2]

1. CPU scale: the best preset's model (every switch on, random weights, width --width, the data's
   vocabulary) scores the first --docs documents of --data's validation split twice, plainly (chunked, document-isolated)
   and with the preset's TTT (its phased prefix scaled to the same share of documents as the
   record's 2,500 of 50,000). Prints seconds, targets/s, and the FLOPs of each pass as counted by
   torch.utils.flop_counter (the ops that actually ran), hence FLOPs per target of each.
2. Projection: the FLOPs of one plain forward per target of the FULL best model (width 512,
   vocabulary 8192, 2048 tokens) are counted the same way on one sequence; TTT's cost per target is
   that times the ratio measured in 1 (same switches, same chunking; the ratio grows with width
   roughly as the matmuls do, so it is the quantity that transfers). Times the validation set's
   targets (47,851,520 in the record's log) that is the TTT pass's work; at a model-FLOP
   utilisation of 8 H100s (989 TFLOP/s dense bf16 each) it gives seconds against the 600 s eval
   budget. The utilisation is not measured here: printed are the one the record's own 508.8 s
   implies for its share of the work, and a range.
Nothing here is a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from golfcli.params import load_params
from stages.data.shards import BOS_ID, find_tokenizer, load_tokenizer, load_val_tokens
from stages.eval.evaluate import LoadedModel, score_stream
from stages.eval.params import EvalParams
from stages.model.config import ModelConfig
from stages.model.gpt import build_model

ROOT = Path(__file__).resolve().parent.parent
RECORD_VAL_TARGETS = 47_851_520  # BEST train_seed42.log: val tokens of the TTT pass
RECORD_TTT_SECONDS = 508.8  # BEST train_seed42.log: the phased + LoRA TTT eval
RECORD_VAL_DOCS, RECORD_PREFIX_DOCS = 50_000, 2_500
H100_DENSE_BF16 = 989e12


def scored_pass(model: LoadedModel, tokens: torch.Tensor, params: EvalParams) -> tuple[float, float]:
    """(seconds, FLOPs) of one scoring pass."""
    counter = FlopCounterMode(display=False)
    t0 = time.perf_counter()
    with counter:
        scores = score_stream(model, tokens, params)
    seconds = time.perf_counter() - t0
    scores.check_once()
    return seconds, float(counter.get_total_flops())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--data", type=Path, default=ROOT / "data/tokens")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--docs", type=int, default=60,
                    help="score the first DOCS validation documents (TTT is slow on a CPU)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    sections = load_params(ROOT / "configs/best.yaml", {"model": ModelConfig, "eval": EvalParams})
    full, ttt = sections["model"], sections["eval"]
    vocab = load_tokenizer(find_tokenizer(args.data)).get_piece_size()
    heads = max(2, args.width // 64)
    small = dataclasses.replace(full, vocab_size=vocab, model_dim=args.width, num_heads=heads,
                                num_kv_heads=max(1, heads // 2))
    torch.manual_seed(0)
    model = LoadedModel(build_model(small).state_dict(), small, None, {})
    val = load_val_tokens(args.data)
    stream = val.concatenated()
    starts = (stream == BOS_ID).nonzero()[0]
    cut = int(starts[args.docs]) if len(starts) > args.docs else len(stream)
    tokens = torch.from_numpy(stream[:cut].astype("int64"))
    n_docs = int((stream[:cut] == BOS_ID).sum())
    prefix = max(1, round(n_docs * RECORD_PREFIX_DOCS / RECORD_VAL_DOCS))
    ttt = dataclasses.replace(ttt, device="cpu", ttt_phased_prefix_docs=prefix)
    plain = dataclasses.replace(ttt, mode="chunked", doc_isolated=True)
    targets = tokens.numel() - 1
    print(f"CPU scale: best preset at width {args.width} ({heads} heads), vocab {vocab}, "
          f"{targets:,} targets in {n_docs} documents, phased prefix {prefix} documents, "
          f"{args.threads} threads")
    plain_s, plain_flops = scored_pass(model, tokens, plain)
    ttt_s, ttt_flops = scored_pass(model, tokens, ttt)
    for name, s, f in (("chunked", plain_s, plain_flops), ("phased+LoRA TTT", ttt_s, ttt_flops)):
        print(f"  {name:<16} {s:8.1f} s  {targets / s:9,.0f} targets/s  "
              f"{f / targets / 1e6:9.2f} MFLOP/target  {f / s / 1e9:6.1f} GFLOP/s")
    ratio = ttt_flops / plain_flops

    # One full-size forward over one 2048-token sequence, counted (random weights; CPU fp32).
    net = build_model(full).eval()
    x = torch.randint(0, full.vocab_size, (1, ttt.seq_len))
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        net(x)
    full_fwd = counter.get_total_flops() / x.numel()
    total = full_fwd * ratio * RECORD_VAL_TARGETS
    print(f"Projection: full best model {full_fwd / 1e9:.3f} GFLOP per target forward; TTT/plain "
          f"FLOP ratio {ratio:.2f} (measured above); {RECORD_VAL_TARGETS:,} targets -> "
          f"{total / 1e15:.1f} PFLOP")
    # The record ran the same pass in 508.8 s (BEST train_seed42.log), scoring with the forward it
    # trains with; golf scores in a separate inference-mode forward first: about 3/4 of golf's work.
    implied = total * 0.75 / (RECORD_TTT_SECONDS * 8 * H100_DENSE_BF16)
    print(f"  the record's {RECORD_TTT_SECONDS} s for ~3/4 of this work implies "
          f"{implied:.1%} utilisation: this pass is many small sequential steps, not big matmuls")
    for mfu in (implied, 0.05, 0.10, 0.30):
        seconds = total / (8 * H100_DENSE_BF16 * mfu)
        print(f"  8 x H100 at {mfu:.0%} model-FLOP utilisation: {seconds:6.0f} s "
              f"({'within' if seconds <= 600 else 'OVER'} the 600 s eval budget)")


if __name__ == "__main__":
    main()
