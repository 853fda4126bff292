"""Where a run's seconds went, against the challenge's two budgets: 600 s to train, 600 s to eval.

A run's log records each phase as a line

    ledger: <phase> <seconds>s [train|eval]

Training, averaging, calibration, quantization and compression count to the train budget
(everything that reads training data or makes the artifact: the records stop training early so that
GPTQ's calibration fits in the 600 s), loading and scoring (TTT included) to the eval budget.
`golf audit --log` and `golf submission` read these lines back.
"""

from __future__ import annotations

import re

BUDGET_SECONDS = 600.0
BUDGETS = ("train", "eval")
_LINE = re.compile(r"^ledger: (\S+) ([0-9.]+)s \[(train|eval)\]$")


def ledger_line(phase: str, seconds: float, budget: str) -> str:
    return f"ledger: {phase} {seconds:.3f}s [{budget}]"


def parse_ledger(text: str) -> list[tuple[str, float, str]]:
    """(phase, seconds, budget) of every ledger line of a log, in order."""
    out = []
    for line in text.splitlines():
        m = _LINE.match(line.strip())
        if m:
            out.append((m.group(1), float(m.group(2)), m.group(3)))
    return out


def totals(entries: list[tuple[str, float, str]]) -> dict[str, float]:
    """Seconds spent against each budget."""
    return {b: sum(s for _, s, budget in entries if budget == b) for b in BUDGETS}


def summary_lines(entries: list[tuple[str, float, str]]) -> list[str]:
    return [f"ledger_total: {b} {t:.3f}s of {BUDGET_SECONDS:.0f}s "
            f"{'within' if t <= BUDGET_SECONDS else 'OVER'}" for b, t in totals(entries).items()]


def within_budgets(text: str) -> tuple[bool, str]:
    """Whether a run log's ledger keeps both budgets, and a line saying so (no ledger: False)."""
    entries = parse_ledger(text)
    if not entries:
        return False, "the log has no ledger lines: where the seconds went is not shown"
    spent = totals(entries)
    over = [b for b, t in spent.items() if t > BUDGET_SECONDS]
    detail = ", ".join(f"{b} {t:.1f} s" for b, t in spent.items())
    return not over, (f"{detail} of {BUDGET_SECONDS:.0f} s each"
                      + (f": over the {' and '.join(over)} budget" if over else ""))
