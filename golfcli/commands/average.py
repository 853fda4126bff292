"""`golf average`: compatible checkpoints -> their (weighted) average."""

from pathlib import Path

import click

from golfcli.options import CONTEXT, params_epilog, stage_options
from golfcli.params import describe_source, load_params
from stages import artifacts
from stages.files import check_outputs
from stages.train.average import AverageParams, average

SECTIONS = {"average": AverageParams}


@click.command(name="average", context_settings=CONTEXT, epilog=params_epilog(SECTIONS))
@click.argument("checkpoints", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@stage_options
def command(checkpoints, out, params_file, overrides):
    """Average compatible checkpoints (uniform, or `average.weights`).

    \b
    Tight SWA:       golf average RUN/swa/*.safetensors --out swa.safetensors
    SWA + EMA:       golf average RUN/swa/*.safetensors RUN/ema.safetensors --out ...
    """
    check_outputs([out], checkpoints)
    p = load_params(params_file, SECTIONS, overrides)["average"]
    loaded, parents = [], {}
    for i, c in enumerate(checkpoints):
        ckpt, parents[f"input_{i}"] = artifacts.load_with_hash(c, expect="checkpoint")
        loaded.append((str(c), ckpt))
    digest = artifacts.save(average(loaded, p, parents=parents), out)
    click.echo(f"{out}: average of {len(checkpoints)} checkpoint(s) "
               f"(weights {p.weights or 'uniform'}), {digest[:19]}…")
    click.echo(describe_source(params_file, tuple(SECTIONS)))
