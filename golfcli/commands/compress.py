"""`golf compress`: a quantized artifact -> one checksummed `.golf` blob and its size report."""

from pathlib import Path

import click

from golfcli.options import CONTEXT, params_epilog, stage_options
from golfcli.params import describe_source, load_params
from stages.codec.compress import CompressParams, compress
from stages.codec.entropy import format_group_table, group_report
from stages.errors import GolfError
from stages.files import write_bytes_atomic, write_json_atomic

SECTIONS = {"compress": CompressParams}
PRINT_ONLY = Path("-")  # `--report` alone prints the table; `--report FILE` also writes the JSON


@click.command(name="compress", context_settings=CONTEXT, epilog=params_epilog(SECTIONS))
@click.argument("quantized", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--codec", default=None,
              help="Shortcut for --set codec=... (zstd, brotli, lzma, ans).")
@click.option("--layout", default=None,
              help="Shortcut for --set layout=... (plain, shuffle, grouped, bitpack).")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None,
              is_flag=False, flag_value=str(PRINT_ONLY),
              help="Print bytes per tensor group against the entropy bound; with FILE, also "
                   "write the size accounting and the groups as JSON there.")
@stage_options
def command(quantized, out, codec, layout, report, params_file, overrides):
    """Pack an artifact into one checksummed .golf blob and print the size accounting.

    The total counts the compressed model plus the code bytes defined in stages/budget.py
    (COUNTED_CODE) against the decimal limit (compress.limit_bytes).
    """
    overrides += tuple(f"{k}={v}" for k, v in (("codec", codec), ("layout", layout)) if v)
    p = load_params(params_file, SECTIONS, overrides)["compress"]
    if not quantized.is_file():
        raise GolfError(f"{quantized}: no such file")
    payload = quantized.read_bytes()
    blob, r = compress(payload, str(quantized), p)
    write_bytes_atomic(out, blob)
    if report is not None:
        r.update(group_report(payload, r["codec"], r["level"]))
        if report != PRINT_ONLY:
            write_json_atomic(report, r)
    click.echo(f"{out}: {r['codec']}-{r['level']} {r['payload_bytes']:,} -> "
               f"{r['model_bytes']:,} bytes")
    if report is not None:
        click.echo("\n".join(format_group_table(r)))
    click.echo(f"  model {r['model_bytes']:>12,}\n  code  {r['code_bytes']:>12,}  "
               f"({r['code_files']} files)\n  total {r['total_bytes']:>12,} / {r['limit_bytes']:,}  "
               f"{'OK' if r['fits'] else 'OVER THE LIMIT'} ({r['headroom_bytes']:+,})")
    click.echo(describe_source(params_file, tuple(SECTIONS)))
