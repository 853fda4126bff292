"""`golf inspect`: an artifact's kind, lineage, params, layer plan and tensors."""

import json
from pathlib import Path

import click

from golfcli.options import CONTEXT
from stages.tools.describe import describe, format_description


@click.command(name="inspect", context_settings=CONTEXT)
@click.argument("artifact", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def command(artifact, as_json):
    """Show an artifact's kind, format, config, parents, provenance, layer plan and tensors
    (each with its role: optimizer kind, quantization group, TTT target)."""
    d = describe(artifact)
    click.echo(json.dumps(d, indent=2, sort_keys=True) if as_json else
               "\n".join(format_description(d)))
