"""The 16,000,000-byte budget: the limit, the size report, and fitting a model into it.

The challenge's rule: compressed model bytes + code bytes <= 16,000,000 decimal bytes. The code
that counts is the train_gpt.py a submission ships (stages/submit/bundle.py builds and measures it
for a run's params); `golf compress` reports against the limit, `golf audit` checks it, and
`golf quantize --target-bytes` searches for a quantization that fits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from stages.errors import GolfError

LIMIT_BYTES = 16_000_000


class BudgetError(GolfError):
    """No setting within the search range fits the byte target."""


def size_report(model_bytes: int, code_bytes: int, limit_bytes: int = LIMIT_BYTES) -> dict:
    """Compressed model bytes + counted code bytes against the limit."""
    total = model_bytes + code_bytes
    return {
        "model_bytes": model_bytes,
        "code_bytes": code_bytes,
        "total_bytes": total,
        "limit_bytes": limit_bytes,
        "headroom_bytes": limit_bytes - total,
        "fits": total <= limit_bytes,
    }


T = TypeVar("T")


def search_clip_multiplier(attempt: Callable[[float], tuple[T, int]], base: float,
                           target_bytes: int, bisect_steps: int = 8) -> tuple[T, dict]:
    """The smallest clip multiplier >= `base` whose result fits in `target_bytes`.

    Wider clips mean fewer distinct codes and so fewer bytes (for SDClip the code entropy falls like
    -log2 k), at some cost in precision. `base` is kept if it already fits; otherwise the multiplier
    doubles until it fits, then bisects (geometrically) between the last one that did not fit and
    the first that did, so the least precision is given up.

    Args:
        attempt: multiplier -> (result, total bytes it costs).
        base: the configured multiplier, where the search starts.
        target_bytes: the budget.

    Returns:
        The best result and a report: the chosen multiplier, its bytes and every try.
    """
    tries: list[dict] = []

    def run(multiplier: float) -> tuple[T, int]:
        result, total = attempt(multiplier)
        tries.append({"clip_multiplier": round(multiplier, 6), "total_bytes": total})
        return result, total

    best, total = run(base)
    if total <= target_bytes:
        return best, {"clip_multiplier": base, "total_bytes": total, "tries": tries}
    lo, hi = base, base
    while total > target_bytes:
        lo, hi = hi, hi * 2.0
        if hi > 64 * base:
            raise BudgetError(f"cannot reach {target_bytes:,} bytes: even clip_multiplier "
                              f"{lo:g} gives {total:,}; lower the bits")
        best, total = run(hi)
    best_multiplier, best_total = hi, total
    for _ in range(bisect_steps):
        mid = (lo * hi) ** 0.5
        result, total = run(mid)
        if total <= target_bytes:
            hi, best, best_multiplier, best_total = mid, result, mid, total
        else:
            lo = mid
    return best, {"clip_multiplier": best_multiplier, "total_bytes": best_total, "tries": tries}
