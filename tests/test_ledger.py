"""The time ledger: a run's seconds per phase, held to the 600 s train and eval budgets."""

from stages.ledger import ledger_line, parse_ledger, summary_lines, totals, within_budgets


def test_lines_read_back_as_written():
    text = "\n".join(["step:1/2 train_loss:1.0", ledger_line("train_loop", 590.25, "train"),
                      ledger_line("calibration", 4.5, "train"), ledger_line("eval", 455.0, "eval"),
                      "ledger: junk 1s [later]"])
    entries = parse_ledger(text)
    assert entries == [("train_loop", 590.25, "train"), ("calibration", 4.5, "train"),
                       ("eval", 455.0, "eval")]
    assert totals(entries) == {"train": 594.75, "eval": 455.0}
    assert summary_lines(entries) == ["ledger_total: train 594.750s of 600s within",
                                      "ledger_total: eval 455.000s of 600s within"]


def test_a_run_over_a_budget_or_without_a_ledger_does_not_pass():
    ok, detail = within_budgets(ledger_line("train_loop", 599.0, "train"))
    assert ok and "train 599.0 s" in detail
    over = "\n".join([ledger_line("train_loop", 590.0, "train"),
                      ledger_line("quantize", 11.0, "train"), ledger_line("eval", 10.0, "eval")])
    ok, detail = within_budgets(over)
    assert not ok and "over the train budget" in detail
    assert within_budgets("step:1/2 train_loss:1.0\n") == (
        False, "the log has no ledger lines: where the seconds went is not shown")
