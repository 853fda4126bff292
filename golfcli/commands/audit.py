"""`golf audit`: the legality checks of an eval mode, run through its own scoring pass."""

from pathlib import Path

import click

from golfcli.options import CONTEXT, data_option, params_epilog, stage_options
from golfcli.params import describe_source, load_params
from stages.eval.audit import audit, format_checks, report
from stages.eval.evaluate import load_model
from stages.eval.params import EvalParams
from stages.files import check_outputs, write_json_atomic
from stages.submit.bundle import build_bundle, run_params
from stages.submit.entry import SECTIONS as RUN_SECTIONS

# eval first: a bare --set key belongs to it. The others say what train_gpt.py would hold.
SECTIONS = {"eval": EvalParams, **RUN_SECTIONS}


@click.command(name="audit", context_settings=CONTEXT, epilog=params_epilog(SECTIONS))
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@data_option
@click.option("--mode", default=None, help="Shortcut for --set mode=... (the eval mode audited).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the checks as JSON here.")
@click.option("--log", "log_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="The run's log: its ledger must keep the 600 s train and eval "
                                 "budgets (an extra check).")
@click.option("--prefix-tokens", type=click.IntRange(min=0), default=0,
              help="Validation prefix the behavioural checks run on [0: 4 x eval.seq_len].")
@click.option("--samples", type=click.IntRange(min=1), default=4,
              help="Tokens the causality check changes (one scoring pass each).")
@stage_options
def command(model, data_dir, mode, json_out, log_file, prefix_tokens, samples, params_file,
            overrides):
    """Check that MODEL's eval obeys the rules: prints PASS/FAIL per check, exits 1 on any FAIL.

    \b
    Runs the eval mode's own scoring pass (TTT included) on a validation prefix:
    causality, normalisation, score before update; then byte accounting, size,
    provenance (the tokenizer and, by content, the training and calibration data
    are DATA_DIR's, its train split free of validation documents) and document
    isolation. A check with nothing to probe, or a prediction that is not finite,
    is a FAIL. With --log, the run's ledger must keep the 600 s budgets too.
    """
    check_outputs([json_out], [model, data_dir])
    if mode:
        overrides += (f"mode={mode}",)
    sections = load_params(params_file, SECTIONS, overrides)
    p = sections["eval"]
    loaded = load_model(model)  # a malformed model is refused before the code is measured
    code = len(build_bundle(run_params(sections)).source)
    checks = audit(loaded, data_dir, p, prefix_tokens=prefix_tokens, samples=samples,
                   code_bytes=code, log=log_file.read_text(errors="replace") if log_file else None)
    if json_out is not None:
        write_json_atomic(json_out, report(checks, p))
    click.echo(f"{model}: audit of eval mode {p.mode}")
    click.echo("\n".join(format_checks(checks)))
    click.echo(describe_source(params_file, tuple(SECTIONS)))
    if not all(c.passed for c in checks):
        raise click.exceptions.Exit(1)
