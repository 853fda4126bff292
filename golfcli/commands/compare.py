"""`golf compare`: is a candidate better than a baseline across seeds? (the acceptance rule)"""

from pathlib import Path

import click

from golfcli.options import CONTEXT
from stages.files import check_outputs, write_json_atomic
from stages.tools.compare import compare, format_comparison, read_metrics


@click.command(name="compare", context_settings={**CONTEXT, "ignore_unknown_options": True})
@click.argument("files", nargs=-1, type=click.UNPROCESSED, metavar="RUN_METRICS... --baseline "
                "BASELINE_METRICS...")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the result as JSON.")
@click.option("--min-gain", type=click.FloatRange(min=0), default=0.005,
              help="Improvement in mean val_loss (nats) that must hold.")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.01,
              help="Significance level of the one-sided Welch t-test.")
def command(files, out, min_gain, alpha):
    """Compare `golf eval` metrics of candidate seeds with baseline seeds.

    Mean and std of val_loss and val_bpb on each side, and a one-sided Welch t-test of whether the
    candidate improves the mean val_loss by at least --min-gain nats at p < --alpha (the
    challenge README's acceptance rule: 0.005 nats, p < 0.01); beside it the leaderboard's rule
    since PR #1902 (better at p < 0.25 against the previous frontier row), and the seeds a side
    each rule would need. The same eval (or model) given twice, and runs of different tokenizers,
    are refused. Everything after --baseline is a baseline file, so shell globs work on both sides:

        golf compare runs/new/*/eval.json --baseline runs/base/*/eval.json
    """
    files = list(files)
    if files.count("--baseline") != 1:
        raise click.UsageError("give the baseline runs once, after --baseline")
    split = files.index("--baseline")
    candidate, baseline = files[:split], files[split + 1:]
    if not candidate or not baseline:
        raise click.UsageError("need candidate RUN_METRICS before --baseline and files after it")
    check_outputs([out], files[:split] + files[split + 1:])
    result = compare([read_metrics(p) for p in candidate], [read_metrics(p) for p in baseline],
                     min_gain_nats=min_gain, alpha=alpha, names=candidate + baseline)
    click.echo("\n".join(format_comparison(result)))
    if out:
        write_json_atomic(out, result)
