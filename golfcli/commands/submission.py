"""`golf submission`: the records folder a challenge pull request adds (stages/submit/folder.py)."""

import re
from pathlib import Path

import click
import torch

from golfcli.options import CONTEXT, params_epilog, stage_options
from golfcli.params import describe_source, load_params
from stages.files import check_outputs, write_bytes_atomic, write_json_atomic
from stages.submit.bundle import build_bundle, run_params
from stages.submit.entry import SECTIONS
from stages.submit.folder import SeedRun, write_submission

# The DVC pipeline's outputs: what a submission of the default run is made from.
PIPELINE_RUN = (Path("runs/train/train.log"), Path("metrics/eval.json"), Path("metrics/audit.json"))


def _from_log(pattern: str, log: Path, default: str) -> str:
    found = re.search(pattern, log.read_text(errors="replace"), re.M) if log.is_file() else None
    return found.group(1) if found else default


@click.command(name="submission", context_settings=CONTEXT, epilog=params_epilog(SECTIONS))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The records folder to write (new, or empty).")
@click.option("--run", "runs", multiple=True, nargs=4, metavar="SEED LOG EVAL_JSON AUDIT_JSON",
              type=(int, click.Path(dir_okay=False, path_type=Path),
                    click.Path(dir_okay=False, path_type=Path),
                    click.Path(dir_okay=False, path_type=Path)),
              help="One seed's run: its log, `golf eval --out` JSON and `golf audit --json` result "
                   "(repeat per seed) [default: the DVC pipeline's run, with train.seed].")
@click.option("--name", default="golf run", help="submission.json name.")
@click.option("--author", default="", help="submission.json author.")
@click.option("--github-id", default="", help="submission.json github_id.")
@click.option("--blurb", default="Trained, quantized, compressed and scored with golf.",
              help="One paragraph for submission.json and the README.")
@click.option("--hardware", default=None,
              help="Hardware of the runs [default: read from the first log, else 'unknown'].")
@click.option("--metrics", "metrics_out", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Also write the bytes and the score as JSON here (for DVC).")
@click.option("--bundle-only", is_flag=True,
              help="Write only OUT/train_gpt.py: the file to run for each seed before the "
                   "folder can be made.")
@stage_options
def command(out_dir, runs, name, author, github_id, blurb, hardware, metrics_out, bundle_only,
            params_file, overrides):
    """Write the records folder: train_gpt.py (the self-extracting bundle whose own bytes are the
    counted code), submission.json, README.md, train_seed<N>.log and requirements.txt.

    train_gpt.py holds the golf modules these params need and the params themselves; run it in the
    folder with `torchrun --standalone --nproc_per_node=8 train_gpt.py` (DATA_PATH and
    TOKENIZER_PATH in the environment). Its log names its sha256, and the folder is refused when a
    seed's log was written by another train_gpt.py than the one these params pack. The usual order:
    `golf submission --bundle-only --out DIR`, run DIR/train_gpt.py per seed, `golf eval` and
    `golf audit` each seed's final_model.golf, then `golf submission --out DIR2 --run ...`.
    """
    sections = load_params(params_file, SECTIONS, overrides)
    params = run_params(sections)
    check_outputs([out_dir, metrics_out], [params_file, *(f for r in runs for f in r[1:])])
    if bundle_only:
        bundle = build_bundle(params)
        write_bytes_atomic(out_dir / "train_gpt.py", bundle.source)
        click.echo(f"{out_dir / 'train_gpt.py'}: {len(bundle.source):,} bytes "
                   f"({len(bundle.modules)} modules, {bundle.codec})")
        click.echo(describe_source(params_file, tuple(SECTIONS)))
        return
    seed_runs = [SeedRun(*r) for r in runs] or \
        [SeedRun(sections["train"].seed, *PIPELINE_RUN)]
    first_log = seed_runs[0].log
    device = _from_log(r"device (.+?) world_size (\d+)", first_log, "")
    world = _from_log(r"world_size (\d+)", first_log, "1")
    meta = {"name": name, "author": author, "github_id": github_id, "blurb": blurb,
            "hardware": hardware or (f"{world}x {device}" if device else "unknown"),
            "pytorch_version": _from_log(r"torch (\S+)", first_log, torch.__version__)}
    bundle = build_bundle(params)
    doc = write_submission(out_dir, params, bundle, seed_runs, meta)
    if metrics_out is not None:
        write_json_atomic(metrics_out, {k: doc[k] for k in (
            "bytes_code", "bytes_total", "val_bpb", "val_bpb_std", "val_loss", "seeds")})
    click.echo(f"{out_dir}: train_gpt.py {len(bundle.source):,} bytes ({len(bundle.modules)} "
               f"modules, {bundle.codec}), {len(seed_runs)} seed(s), val_bpb {doc['val_bpb']:.5f} "
               f"± {doc['val_bpb_std']:.5f}, at most {doc['bytes_total']:,} bytes")
    click.echo(describe_source(params_file, tuple(SECTIONS)))
