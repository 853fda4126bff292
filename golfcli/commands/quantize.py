"""`golf quantize`: a float checkpoint -> a quantized artifact (stages/quant/quantize.py)."""

from pathlib import Path

import click

from golfcli.options import CONTEXT, LazyBar, params_epilog, stage_options
from golfcli.params import describe_source, load_params
from stages import artifacts
from stages.errors import GolfError
from stages.files import check_outputs
from stages.quant.calibrate import calibrate, calibration_steps
from stages.quant.format import scheme_counts
from stages.quant.params import QuantizeParams
from stages.quant.quantize import quantize, quantize_to_target

SECTIONS = {"quantize": QuantizeParams}


@click.command(name="quantize", context_settings=CONTEXT, epilog=params_epilog(SECTIONS))
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--method", default=None, help="Shortcut for --set method=... (rtn, gptq).")
@click.option("--grid", default=None,
              help="Shortcut for --set grid=... (percentile, mse, sdclip, sdclip-hessian).")
@click.option("--calib", default=None, metavar="DATA_DIR|self",
              help="Calibration for gptq, sdclip-hessian or fisher_alpha: a data directory "
                   "(only its train shards are read) or 'self' (text sampled from the model). "
                   "Ignored otherwise.")
@click.option("--target-bytes", type=click.IntRange(min=1), default=None,
              help="Widen the clips until compressed model + counted code bytes fit.")
@click.option("--codec", default="zstd", help="Codec that --target-bytes measures with.")
@stage_options
def command(checkpoint, out, method, grid, calib, target_bytes, codec, params_file, overrides):
    """Quantize a checkpoint with `quantize.method` x `quantize.grid`.

    Any saved checkpoint works, so quantizers can be swapped without retraining.
    """
    check_outputs([out], [checkpoint, calib if calib not in (None, "self") else None])
    overrides += tuple(f"{k}={v}" for k, v in (("method", method), ("grid", grid)) if v)
    p = load_params(params_file, SECTIONS, overrides)["quantize"]
    ckpt, digest = artifacts.load_with_hash(checkpoint, expect="checkpoint")
    kwargs = {"parents": {"checkpoint": digest}}
    if p.needs_calibration():
        if calib is None:
            what = f"{p.method}/{p.grid}" + (" with fisher_alpha" if p.fisher_alpha else "")
            raise GolfError(f"quantize {what} needs --calib DATA_DIR or --calib self")
        with LazyBar(calibration_steps(calib, p), "calibrate", "batch") as bar:
            kwargs["hessians"], kwargs["calibration"] = calibrate(ckpt, calib, p, bar.update)
    if target_bytes is not None:
        # Only with this option does quantize read the codecs and the bundle (the code that
        # counts: train_gpt.py for every section of PARAMS): the DVC stage does not use it.
        from stages.codec.blob import packed_size
        from stages.submit.bundle import build_bundle, run_params
        from stages.submit.entry import SECTIONS as RUN_SECTIONS

        run = load_params(params_file, {"quantize": QuantizeParams, **RUN_SECTIONS}, overrides)
        code = len(build_bundle(run_params(run)).source)
        q, search = quantize_to_target(ckpt, p, target_bytes=target_bytes,
                                       measure=lambda a: packed_size(a, codec) + code, **kwargs)
        click.echo(f"target {target_bytes:,} bytes with {codec}: clip_multiplier "
                   f"{search['clip_multiplier']:.4g} -> {search['total_bytes']:,} bytes "
                   f"({len(search['tries'])} tries)")
    else:
        with LazyBar(len(ckpt.tensors), f"{p.method}/{p.grid}", "tensor") as bar:
            q = quantize(ckpt, p, on_progress=bar.update, **kwargs)
    digest = artifacts.save(q, out)
    click.echo(f"{out}: {p.method}/{p.grid} int{p.bits}, tensors {scheme_counts(q)}, "
               f"{out.stat().st_size:,} bytes, {digest[:19]}…")
    click.echo(describe_source(params_file, tuple(SECTIONS)))
