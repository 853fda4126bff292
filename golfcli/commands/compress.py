"""`golf compress`: a quantized artifact -> one checksummed `.golf` blob and its size report."""

from pathlib import Path

import click

from golfcli.options import CONTEXT, params_epilog, stage_options
from golfcli.params import describe_source, load_params
from stages.artifacts import from_bytes
from stages.codec.compress import compress
from stages.codec.entropy import format_group_table, group_report
from stages.codec.params import CompressParams
from stages.errors import GolfError
from stages.files import check_outputs, json_bytes, write_all_atomic
from stages.submit.bundle import build_bundle, run_params
from stages.submit.entry import SECTIONS as RUN_SECTIONS

# compress first: a bare --set key belongs to it. The others say what train_gpt.py would hold.
SECTIONS = {"compress": CompressParams, **RUN_SECTIONS}
PRINT_ONLY = Path("-")  # `--report` alone prints the table; `--report FILE` also writes the JSON


@click.command(name="compress", context_settings=CONTEXT, epilog=params_epilog(SECTIONS))
@click.argument("quantized", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--codec", default=None,
              help="Shortcut for --set codec=... (zstd, brotli, lzma, ans, ans-columns).")
@click.option("--layout", default=None,
              help="Shortcut for --set layout=... (plain, shuffle, grouped, bitpack).")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None,
              is_flag=False, flag_value=str(PRINT_ONLY),
              help="Print bytes per tensor group against the entropy bound; with FILE, also "
                   "write the size accounting and the groups as JSON there.")
@stage_options
def command(quantized, out, codec, layout, report, params_file, overrides):
    """Pack an artifact into one checksummed .golf blob and print the size accounting.

    The total counts the compressed model plus the code: the train_gpt.py a submission of these
    params would ship (every section of PARAMS is read for it), against the decimal limit
    compress.limit_bytes; over it, nothing is written.
    """
    check_outputs([out, report if report != PRINT_ONLY else None], [quantized])
    overrides += tuple(f"{k}={v}" for k, v in (("codec", codec), ("layout", layout)) if v)
    sections = load_params(params_file, SECTIONS, overrides)
    p = sections["compress"]
    if not quantized.is_file():
        raise GolfError(f"{quantized}: no such file")
    payload = quantized.read_bytes()
    from_bytes(payload, str(quantized), expect=("quantized", "checkpoint"))  # before measuring
    bundle = build_bundle(run_params(sections))
    blob, r = compress(payload, str(quantized), p, len(bundle.source))
    r.update(code_modules=len(bundle.modules))
    if report is not None:
        r.update(group_report(payload, r["codec"], r["level"]))
    outputs = {out: blob}
    if report not in (None, PRINT_ONLY):
        outputs[report] = json_bytes(r, report)
    write_all_atomic(outputs)  # both written before either replaces an earlier one
    click.echo(f"{out}: {r['codec']}-{r['level']} {r['payload_bytes']:,} -> "
               f"{r['model_bytes']:,} bytes")
    if report is not None:
        click.echo("\n".join(format_group_table(r)))
    click.echo(f"  model {r['model_bytes']:>12,}\n  code  {r['code_bytes']:>12,}  (train_gpt.py "
               f"for these params, {r['code_modules']} modules)\n"
               f"  total {r['total_bytes']:>12,} / {r['limit_bytes']:,}  OK "
               f"({r['headroom_bytes']:+,})")
    click.echo(describe_source(params_file, tuple(SECTIONS)))
