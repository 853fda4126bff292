"""`golf audit`: the legality checks of an eval mode, run through its own scoring pass."""

from pathlib import Path

import click

from golfcli.options import CONTEXT, data_option, params_epilog, stage_options
from golfcli.params import describe_source, load_params
from stages.eval.audit import audit, format_checks, report
from stages.eval.evaluate import load_model
from stages.eval.params import EvalParams
from stages.files import write_json_atomic

SECTIONS = {"eval": EvalParams}


@click.command(name="audit", context_settings=CONTEXT, epilog=params_epilog(SECTIONS))
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@data_option
@click.option("--mode", default=None, help="Shortcut for --set mode=... (the eval mode audited).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the checks as JSON here.")
@click.option("--prefix-tokens", type=click.IntRange(min=0), default=0,
              help="Validation prefix the behavioural checks run on [0: 4 x eval.seq_len].")
@click.option("--samples", type=click.IntRange(min=1), default=4,
              help="Tokens the causality check changes (one scoring pass each).")
@stage_options
def command(model, data_dir, mode, json_out, prefix_tokens, samples, params_file, overrides):
    """Check that MODEL's eval obeys the rules: prints PASS/FAIL per check, exits 1 on any FAIL.

    \b
    Runs the eval mode's own scoring pass (TTT included) on a validation prefix:
    causality, normalisation, score before update; then byte accounting, size,
    provenance (no validation shard among the recorded inputs) and document isolation.
    """
    if mode:
        overrides += (f"mode={mode}",)
    p = load_params(params_file, SECTIONS, overrides)["eval"]
    checks = audit(load_model(model), data_dir, p, prefix_tokens=prefix_tokens, samples=samples)
    if json_out is not None:
        write_json_atomic(json_out, report(checks, p))
    click.echo(f"{model}: audit of eval mode {p.mode}")
    click.echo("\n".join(format_checks(checks)))
    click.echo(describe_source(params_file, tuple(SECTIONS)))
    if not all(c.passed for c in checks):
        raise click.exceptions.Exit(1)
