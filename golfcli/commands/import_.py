"""`golf import`: the public baseline's final_model.pt -> a golf checkpoint."""

from pathlib import Path

import click

from golfcli.options import CONTEXT, stage_options
from golfcli.params import parse_override, read_sections
from stages import artifacts
from stages.files import check_outputs
from stages.tools.importer import SHAPE_KEYS, import_baseline, load_baseline_file


@click.command(name="import", context_settings=CONTEXT)
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@stage_options
def command(source, out, params_file, overrides):
    """Import a final_model.pt of the public baseline train_gpt.py as a checkpoint.

    The architecture is read from the tensor shapes; the model section of the params only supplies
    what the weights cannot tell (logit_softcap, rope_base, qk_gain_init), and its shape keys are
    ignored, so the repo's tiny params.yaml does not get in the way. A shape value given with --set
    (model.num_layers=9, ...) is checked against the weights. The file is loaded with
    weights_only=True; a pickle holding anything but tensors is refused.
    """
    check_outputs([out], [source])
    from_file = read_sections(params_file, ("model",))["model"]
    given = {name: value for _, name, value in (parse_override(o, ("model",)) for o in overrides)}
    model_values = {k: v for k, v in from_file.items() if k not in SHAPE_KEYS} | given
    state, digest = load_baseline_file(source)
    ckpt = import_baseline(state, model_values, source=str(source), source_sha256=digest)
    out_digest = artifacts.save(ckpt, out)
    c = ckpt.model_config
    click.echo(f"{out}: {c.num_layers}L x {c.model_dim} (vocab {c.vocab_size}, heads "
               f"{c.num_heads}/{c.num_kv_heads}, mlp x{c.mlp_mult}), "
               f"{sum(t.numel() for t in ckpt.tensors.values()):,} params from {source}, "
               f"{out_digest[:19]}…")
