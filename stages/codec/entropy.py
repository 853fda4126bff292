"""How close a codec gets to the entropy of the quantized codes, tensor group by tensor group.

The yardstick is the order-0 entropy of each group's int8 codes: the fewest bytes a coder can spend
on them if it treats them as independent draws from the group's own histogram. A coder that uses
context (zstd, brotli and lzma find repeats) can go below it when the codes have structure. For each
group the report gives the bytes a codec really spends: for `ans` the group's record in the blob,
for the general-purpose codecs that group's codes compressed alone at the same level.

Beside them, what a context model could save: the fewest bits of the group's code matrices under
one of the contexts a decoder knows (contexts.py), a bound; the ans-columns codec codes the
column-scale one, or a row-scale one, where it pays (columns.py).
"""

from __future__ import annotations

import numpy as np

from stages.codec import ans, spans
from stages.codec.blob import ANS_CODECS, get_codec
from stages.codec.contexts import best_context


def order0_bits(sym: np.ndarray) -> float:
    """Total order-0 entropy of the int8 codes `sym`, in bits (0 for none)."""
    if sym.size == 0:
        return 0.0
    counts = np.bincount(sym.astype(np.int32) + 128).astype(np.float64)
    counts = counts[counts > 0]
    return float(-(counts * np.log2(counts / sym.size)).sum())


def _row(weights: int, bits: float, achieved: int, context: str, context_bits: float) -> dict:
    bound = bits / 8
    return {
        "weights": weights,
        "entropy_bits_per_weight": round(bits / weights, 4) if weights else 0.0,
        "bound_bytes": round(bound, 1),
        "bytes": achieved,
        "bits_per_weight": round(8 * achieved / weights, 4) if weights else 0.0,
        # null when the bound is 0 (every code the same): no ratio to speak of.
        "ratio": round(achieved / bound, 5) if bound > 0 else None,
        "context": context,
        "context_bound_bytes": round(context_bits / 8, 1),
        # What the best context would save against the order-0 bound; negative when no context
        # pays for its own histograms.
        "context_saving_bytes": round(bound - context_bits / 8, 1),
    }


def _achieved(payload: bytes, groups: dict[str, np.ndarray], codec_name: str, level: int) -> dict:
    """Bytes each group costs with `codec_name` at `level`."""
    if codec_name in ANS_CODECS:
        records = ans.group_records(payload, by_columns=codec_name == "ans-columns")
        return {g: len(r) for g, r in records.items()}
    codec = get_codec(codec_name)
    return {g: len(codec.compress(sym.tobytes(), level)) for g, sym in groups.items()}


def group_report(payload: bytes, codec_name: str, level: int) -> dict:
    """Per tensor group: weights, order-0 entropy, bytes spent by the codec, ratio to the bound.

    Args:
        payload: a quantized artifact's bytes (a float checkpoint has no codes: no groups).
        codec_name: a name in `stages.codec.blob.CODECS`.
        level: the codec's level (ignored by `ans`).

    Returns:
        `{"groups": {group: row}, "codes": row}`: the rows in canonical group order, then their
        totals. A row holds `weights`, `entropy_bits_per_weight`, `bound_bytes` (entropy / 8),
        `bytes`, `bits_per_weight`, `ratio` (bytes / bound_bytes), and the best decoder-side
        `context` with its `context_bound_bytes` and `context_saving_bytes` (bound_bytes less
        context_bound_bytes).
    """
    by_group = spans.group_spans(spans.code_spans(payload))
    groups = {g: spans.symbols(payload, group) for g, group in by_group.items()}
    achieved = _achieved(payload, groups, codec_name, level)
    bits = {g: order0_bits(sym) for g, sym in groups.items()}
    contexts = {g: best_context([spans.matrix(payload, s) for s in group])
                for g, group in by_group.items()}
    rows = {g: _row(len(sym), bits[g], achieved[g], *contexts[g]) for g, sym in groups.items()}
    total = _row(sum(len(s) for s in groups.values()), sum(bits.values()), sum(achieved.values()),
                 "each group's best" if groups else "", sum(b for _, b in contexts.values()))
    return {"groups": rows, "codes": total}


def format_group_table(report: dict) -> list[str]:
    """The `golf compress --report` table: per group, the entropy bound against the bytes spent."""
    if not report["groups"]:
        return ["  no quantized codes (int8 *.q tensors) in this artifact"]
    lines = [f"  {'group':<10} {'weights':>11} {'entropy':>8} {'bound':>12} {'bytes':>12} "
             f"{'bits/w':>7} {'x bound':>8} {'ctx bound':>12} {'ctx saves':>10}  context"]
    for name, row in [*report["groups"].items(), ("codes", report["codes"])]:
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.4f}"
        lines.append(f"  {name:<10} {row['weights']:>11,} {row['entropy_bits_per_weight']:>8.3f} "
                     f"{round(row['bound_bytes']):>12,} {row['bytes']:>12,} "
                     f"{row['bits_per_weight']:>7.3f} {ratio:>8} "
                     f"{round(row['context_bound_bytes']):>12,} "
                     f"{round(row['context_saving_bytes']):>+10,}  {row['context']}")
    lines.append("  ctx: fewest bytes under one decoder-side context (stages/codec/contexts.py), "
                 "a bound; the ans-columns codec codes column or row scale where it pays")
    return lines
