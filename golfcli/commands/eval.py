"""`golf eval`: val_loss and val_bpb of a model over the validation split."""

from pathlib import Path

import click

from golfcli.options import CONTEXT, LazyBar, data_option, params_epilog, stage_options
from golfcli.params import describe_source, load_params
from stages.eval.evaluate import evaluate_path
from stages.eval.params import EvalParams
from stages.files import check_outputs, write_json_atomic

SECTIONS = {"eval": EvalParams}


@click.command(name="eval", context_settings=CONTEXT, epilog=params_epilog(SECTIONS))
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@data_option
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the metrics JSON here.")
@click.option("--mode", default=None, help="Shortcut for --set mode=... (chunked, sliding, ttt).")
@stage_options
def command(model, data_dir, out, mode, params_file, overrides):
    """Score MODEL (checkpoint, quantized artifact or .golf blob) on the validation split."""
    check_outputs([out], [model, data_dir])
    if mode:
        overrides += (f"mode={mode}",)
    p = load_params(params_file, SECTIONS, overrides)["eval"]
    with LazyBar(None, "eval", "window") as bar:
        m = evaluate_path(model, data_dir, p, on_progress=bar.update, on_start=bar.start)
    if out is not None:
        write_json_atomic(out, m)
    click.echo(f"{model}: val_loss {m['val_loss']:.4f}  val_bpb {m['val_bpb']:.4f}  "
               f"({m['mode']}, {m['tokens']:,} tokens, {m['bytes']:,} bytes, "
               f"{m['eval_seconds']:.1f}s, {m['tokens_per_s']:,.0f} tok/s)")
    click.echo(describe_source(params_file, tuple(SECTIONS)))
