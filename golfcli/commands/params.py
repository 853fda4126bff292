"""`golf params`: every key of the params file, with its type, default and help."""

import textwrap

import click

from golfcli.options import CONTEXT
from golfcli.params import KNOWN_SECTIONS
from stages.codec.params import CompressParams
from stages.data.tokenize import TokenizeParams
from stages.eval.params import EvalParams
from stages.model.config import ModelConfig
from stages.params import field_docs
from stages.quant.params import QuantizeParams
from stages.train.average import AverageParams
from stages.train.params import TrainParams

CLASSES = {cls.SECTION: cls for cls in (ModelConfig, TokenizeParams, TrainParams, AverageParams,
                                        QuantizeParams, CompressParams, EvalParams)}
assert tuple(CLASSES) == KNOWN_SECTIONS, "golfcli/params.py KNOWN_SECTIONS is out of date"


@click.command(name="params", context_settings=CONTEXT)
@click.argument("sections", nargs=-1, type=click.Choice(KNOWN_SECTIONS), metavar="[SECTION]...")
def command(sections):
    """List the keys of params.yaml: SECTION.KEY, type, default, and what it does.

    With no SECTION, every section. Set a key in params.yaml, or for one run with
    `--set SECTION.KEY=VALUE` on any command that reads its section.
    """
    for section in sections or KNOWN_SECTIONS:
        cls = CLASSES[section]
        click.echo(f"{section}:  {(cls.__doc__ or '').strip().splitlines()[0]}")
        for d in field_docs(cls):
            click.echo(f"  {section}.{d['key']}  ({d['type']}, default {d['default']})")
            click.echo(textwrap.fill(d["help"], 100, initial_indent=" " * 6,
                                     subsequent_indent=" " * 6))
