"""`golf`: one short click command per stage. Each parses, calls a `stages` function, prints.

Every stage command reads its own section of `params.yaml` (`--params FILE` for another file) and
accepts `--set key=value` overrides (`--set model.num_layers=2` for other sections it reads). Errors
in the user's input are one line on stderr and exit status 1; usage errors exit 2.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
from tqdm import tqdm

from golfcli.params import load_params, parse_override, read_sections
from stages import __version__
from stages.errors import GolfError

CONTEXT = {"help_option_names": ["-h", "--help"], "show_default": True}


class GolfGroup(click.Group):
    """Turns library errors into one-line messages with a non-zero exit."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except GolfError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:
            name = f"{e.filename}: " if e.filename else ""
            raise click.ClickException(f"{name}{e.strerror or e}") from None


def stage_options(f):
    """--params and --set, shared by every stage command."""
    f = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                     help="Override a params value (repeatable); KEY is `key` for this stage's "
                          "section or `section.key`.")(f)
    f = click.option("--params", "params_file", type=click.Path(dir_okay=False, path_type=Path),
                     default=None, help="Params file [default: ./params.yaml if present, "
                                        "else built-in defaults].")(f)
    return f


def echo_err(msg: str) -> None:
    click.echo(msg, err=True)


class LazyBar:
    """A tqdm bar that appears only once work starts, so an early error stays a single line."""

    def __init__(self, total: int | None, desc: str, unit: str):
        self.total, self.desc, self.unit = total, desc, unit
        self.bar: tqdm | None = None

    def start(self, total: int | None = None) -> tqdm:
        if self.bar is None:
            # On a terminal a live bar; in logs (DVC, CI) a line every 10 s is plenty.
            self.bar = tqdm(total=total or self.total, desc=self.desc, unit=self.unit,
                            file=sys.stderr, dynamic_ncols=True,
                            mininterval=0.5 if sys.stderr.isatty() else 10.0)
        return self.bar

    def update(self, n: int = 1) -> None:
        self.start().update(n)

    def __enter__(self) -> LazyBar:
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def progress_bar(total: int | None, desc: str, unit: str) -> LazyBar:
    return LazyBar(total, desc, unit)


@click.group(cls=GolfGroup, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="golf")
def cli():
    """Parameter golf as composable stages passing safetensors artifacts.

    \b
    tokenize -> train -> average -> quantize -> compress -> eval
    Run the whole pipeline with `dvc repro`; each stage reads its section of params.yaml.
    """


@cli.command()
@click.option("--corpus", default="stdlib-docs", metavar="SOURCE",
              help="'stdlib-docs' (embedded), a .jsonl file of {\"text\": ...}, or a folder of .txt.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Data directory to write (replaced as a whole).")
@click.option("--tokenizer", "tokenizer_model", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Reuse this SentencePiece model instead of training one.")
@stage_options
def tokenize(corpus, out_dir, tokenizer_model, params_file, overrides):
    """Train a tokenizer (or reuse one) and write token shards + manifest.json.

    Writes OUT/tokenizer.model, OUT/train_000000.bin..., OUT/val_000000.bin... (the official
    parameter-golf shard format) and OUT/manifest.json. The validation split is fixed by a hash of
    each document's text.
    """
    from stages.corpus import load_corpus
    from stages.tokenize import tokenize as run

    p = load_params(params_file, ("tokenize",), overrides)["tokenize"]
    docs = load_corpus(corpus)
    n = min(len(docs.docs), p.max_docs or len(docs.docs))
    with progress_bar(n, "encoding", "doc") as bar:
        m = run(docs, p, out_dir, tokenizer_model, on_progress=bar.update)
    click.echo(f"{out_dir}: {docs.name}, {m['split']['documents']} documents, "
               f"vocab {m['tokenizer']['vocab_size']}, "
               f"train {m['train']['documents']} docs / {m['train']['tokens']:,} tokens, "
               f"val {m['val']['documents']} docs / {m['val']['tokens']:,} tokens / "
               f"{m['val']['text_bytes']:,} bytes (byte table: {m['val']['table_bytes']:,})")


@cli.command()
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", "run_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run directory: final.safetensors, ema.safetensors, train_metrics.json, live/.")
@click.option("--resume", is_flag=True,
              help="Continue the interrupted run in RUN_DIR/resume/ (same params and data).")
@click.option("--nproc", type=click.IntRange(min=1), default=1,
              help="Data-parallel processes on this machine (one GPU each on CUDA); >1 relaunches "
                   "through torchrun with the same global batch.")
@stage_options
def train(data_dir, run_dir, resume, nproc, params_file, overrides):
    """Train the GPT on DATA_DIR's train shards.

    \b
    Reads the `train` and `model` sections. Stops at train.max_steps or
    train.max_wallclock_seconds, whichever comes first; train.schedule picks
    which of the two drives the LR warmdown. Writes to RUN_DIR:
      final.safetensors, ema.safetensors, train_metrics.json
      live/                 loss, LR scale, tok/s (and val) curves for `dvc plots show`
      swa/                  SWA snapshots (train.swa_every > 0) for `golf average`
      resume/               resumable state every train.checkpoint_every steps,
                            deleted when the run finishes; continue with --resume
    With train.val_every > 0 the validation split of DATA_DIR is scored every
    that many steps (logged only; it never changes the training).
    """
    from stages import artifacts, distributed
    from stages.artifacts import sha256_file, write_json_atomic
    from stages.data import find_tokenizer, load_train_tokens
    from stages.device import resolve_device
    from stages.livelog import LiveLog
    from stages.train import train as run
    from stages.validation import build_validator
    import sentencepiece as spm

    p = load_params(params_file, ("train", "model"), overrides)
    model_cfg, train_p = p["model"], p["train"]
    tok = find_tokenizer(data_dir)
    vocab = spm.SentencePieceProcessor(model_file=str(tok)).get_piece_size()
    if vocab != model_cfg.vocab_size:
        raise GolfError(f"model.vocab_size is {model_cfg.vocab_size} but {tok} has {vocab} pieces; "
                        f"set model.vocab_size={vocab}")
    if nproc > 1:  # checked here so a bad value is one line, not one traceback per worker
        distributed.check_world_size(train_p, nproc)
        distributed.check_devices(resolve_device(train_p.device), nproc)
        args = ["train", str(data_dir), "--out", str(run_dir)]
        args += ["--params", str(params_file)] if params_file is not None else []
        args += ["--resume"] if resume else []
        args += [a for o in overrides for a in ("--set", o)]
        sys.exit(subprocess.run(distributed.torchrun_command(nproc, args)).returncode)
    main_process = distributed.is_main_process()  # under torchrun, only rank 0 prints and writes
    data = load_train_tokens(data_dir)
    manifest = Path(data_dir) / "manifest.json"
    parent = sha256_file(manifest) if manifest.is_file() else \
        artifacts.sha256_bytes("".join(data.shard_hashes).encode())
    provenance = {"data_dir": str(data_dir), "tokenizer_sha256": sha256_file(tok),
                  "train_shards": list(data.shard_hashes)}
    validate = build_validator(data_dir, model_cfg, train_p) if train_p.val_every else None
    swa_dir = run_dir / "swa"
    if main_process and not resume:  # a resumed run keeps the snapshots it took before
        for stale in swa_dir.glob("step_*.safetensors"):  # snapshots of an earlier run in this dir
            stale.unlink()

    def on_snapshot(step, ckpt):
        artifacts.save(ckpt, swa_dir / f"step_{step:06d}.safetensors")

    if main_process:
        echo_err(f"training on {data.num_tokens:,} tokens from {len(data.shards)} shard(s)")
    live = LiveLog(run_dir / "live", resume=resume) if main_process else None
    with progress_bar(train_p.max_steps, "train", "step") as bar:
        def on_step(info):
            bar.update(1)
            live.log_step(info.step, info.loss, info.lr_scale, info.tokens_per_s,
                          train_p.log_every)  # on_step runs on rank 0 only
            if info.validation:
                live.log_validation(info.validation)
                bar.start().write(f"step {info.step}: val_loss {info.validation['val_loss']:.4f}, "
                                  f"val_bpb {info.validation['val_bpb']:.4f}", file=sys.stderr)
            if info.step % train_p.log_every == 0 or info.step == 1:
                bar.start().set_postfix(loss=f"{info.loss:.4f}", tok_s=f"{info.tokens_per_s:,.0f}",
                                        lr=f"{info.lr_scale:.2f}", refresh=False)
        result = run(data, model_cfg, train_p, parents={"data": parent}, provenance=provenance,
                     on_step=on_step, on_snapshot=on_snapshot, validate=validate,
                     resume_dir=run_dir / "resume", resume=resume)
    if not main_process:
        return
    live.close()
    artifacts.save(result.final, run_dir / "final.safetensors")
    artifacts.save(result.ema, run_dir / "ema.safetensors")
    write_json_atomic(run_dir / "train_metrics.json", result.metrics)
    m = result.metrics
    click.echo(f"{run_dir}: {m['steps']} steps, {m['tokens_seen']:,} tokens in "
               f"{m['train_seconds']:.1f}s ({m['tokens_per_s']:,.0f} tok/s), "
               f"final train loss {m['final_train_loss']:.4f}")


@cli.command()
@click.argument("checkpoints", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@stage_options
def average(checkpoints, out, params_file, overrides):
    """Average compatible checkpoints (uniform, or `average.weights`).

    \b
    Tight SWA:       golf average RUN/swa/*.safetensors --out swa.safetensors
    SWA + EMA:       golf average RUN/swa/*.safetensors RUN/ema.safetensors --out ...
    """
    from stages import artifacts
    from stages.average import average as run

    p = load_params(params_file, ("average",), overrides)["average"]
    loaded, parents = [], {}
    for i, c in enumerate(checkpoints):
        ckpt, parents[f"input_{i}"] = artifacts.load_with_hash(c, expect="checkpoint")
        loaded.append((str(c), ckpt))
    digest = artifacts.save(run(loaded, p, parents=parents), out)
    click.echo(f"{out}: average of {len(checkpoints)} checkpoint(s) "
               f"(weights {p.weights or 'uniform'}), {digest[:19]}…")


@cli.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--method", default=None, help="Shortcut for --set method=... (rtn, gptq).")
@click.option("--grid", default=None,
              help="Shortcut for --set grid=... (percentile, mse, sdclip, sdclip-hessian).")
@click.option("--calib", default=None, metavar="DATA_DIR|self",
              help="Calibration for gptq / sdclip-hessian: a data directory (only its train "
                   "shards are read) or 'self' (text sampled from the model). Ignored otherwise.")
@click.option("--target-bytes", type=click.IntRange(min=1), default=None,
              help="Widen the clips until compressed model + counted code bytes fit.")
@click.option("--codec", default="zstd", help="Codec that --target-bytes measures with.")
@stage_options
def quantize(checkpoint, out, method, grid, calib, target_bytes, codec, params_file, overrides):
    """Quantize a checkpoint with `quantize.method` x `quantize.grid`.

    Any saved checkpoint works, so quantizers can be swapped without retraining.
    """
    from stages import artifacts
    from stages.compress import code_bytes
    from stages.quant.calibrate import calibrate
    from stages.quantize import needs_calibration, quantize_to_target, scheme_counts
    from stages.quantize import quantize as run

    overrides += tuple(f"{k}={v}" for k, v in (("method", method), ("grid", grid)) if v)
    p = load_params(params_file, ("quantize",), overrides)["quantize"]
    ckpt, digest = artifacts.load_with_hash(checkpoint, expect="checkpoint")
    kwargs = {"parents": {"checkpoint": digest}}
    if needs_calibration(p):
        if calib is None:
            raise GolfError(f"quantize {p.method}/{p.grid} needs --calib DATA_DIR or --calib self")
        kwargs["hessians"], kwargs["calibration"] = calibrate(ckpt, calib, p)
    if target_bytes is None:
        q = run(ckpt, p, **kwargs)
    else:
        q, search = quantize_to_target(ckpt, p, target_bytes=target_bytes, code_bytes=code_bytes(),
                                       codec=codec, **kwargs)
        click.echo(f"target {target_bytes:,} bytes with {codec}: clip_multiplier "
                   f"{search['clip_multiplier']:.4g} -> {search['total_bytes']:,} bytes "
                   f"({len(search['tries'])} tries)")
    digest = artifacts.save(q, out)
    click.echo(f"{out}: {p.method}/{p.grid} int{p.bits}, tensors {scheme_counts(q)}, "
               f"{out.stat().st_size:,} bytes, {digest[:19]}…")


# `--report` alone prints the per-group table; `--report FILE` also writes the JSON (as DVC does).
PRINT_ONLY = Path("-")


@cli.command()
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
def compress(quantized, out, codec, layout, report, params_file, overrides):
    """Pack an artifact into one checksummed .golf blob and print the size accounting.

    The total counts the compressed model plus the code bytes defined in
    stages/compress.py (COUNTED_CODE) against the decimal limit (compress.limit_bytes).
    """
    from stages.artifacts import write_bytes_atomic, write_json_atomic
    from stages.compress import compress as run
    from stages.entropy import group_report

    overrides += tuple(f"{k}={v}" for k, v in (("codec", codec), ("layout", layout)) if v)
    p = load_params(params_file, ("compress",), overrides)["compress"]
    if not quantized.is_file():
        raise GolfError(f"{quantized}: no such file")
    payload = quantized.read_bytes()
    blob, r = run(payload, str(quantized), p)
    write_bytes_atomic(out, blob)
    if report is not None:
        r.update(group_report(payload, r["codec"], r["level"]))
        if report != PRINT_ONLY:
            write_json_atomic(report, r)
    click.echo(f"{out}: {r['codec']}-{r['level']} {r['payload_bytes']:,} -> {r['model_bytes']:,} bytes")
    if report is not None:
        echo_group_table(r)
    click.echo(f"  model {r['model_bytes']:>12,}\n  code  {r['code_bytes']:>12,}  "
               f"({r['code_files']} files)\n  total {r['total_bytes']:>12,} / {r['limit_bytes']:,}  "
               f"{'OK' if r['fits'] else 'OVER THE LIMIT'} ({r['headroom_bytes']:+,})")


def echo_group_table(r: dict) -> None:
    """The codes of each tensor group: entropy bound against the bytes the codec spent."""
    if not r["groups"]:
        click.echo("  no quantized codes (int8 *.q tensors) in this artifact")
        return
    click.echo(f"  {'group':<10} {'weights':>11} {'entropy':>8} {'bound':>12} {'bytes':>12} "
               f"{'bits/w':>7} {'x bound':>8}")
    for name, row in [*r["groups"].items(), ("codes", r["codes"])]:
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.4f}"
        click.echo(f"  {name:<10} {row['weights']:>11,} {row['entropy_bits_per_weight']:>8.3f} "
                   f"{round(row['bound_bytes']):>12,} {row['bytes']:>12,} "
                   f"{row['bits_per_weight']:>7.3f} {ratio:>8}")


@cli.command(name="eval")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data", "data_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Data directory with val shards and the tokenizer.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the metrics JSON here.")
@click.option("--mode", default=None, help="Shortcut for --set mode=...")
@stage_options
def eval_(model, data_dir, out, mode, params_file, overrides):
    """Score MODEL (checkpoint, quantized artifact or .golf blob) on the validation split."""
    from stages.artifacts import write_json_atomic
    from stages.evaluate import evaluate_path

    if mode:
        overrides += (f"mode={mode}",)
    p = load_params(params_file, ("eval",), overrides)["eval"]
    with progress_bar(None, "eval", "window") as bar:
        m = evaluate_path(model, data_dir, p, on_progress=bar.update, on_start=bar.start)
    if out is not None:
        write_json_atomic(out, m)
    click.echo(f"{model}: val_loss {m['val_loss']:.4f}  val_bpb {m['val_bpb']:.4f}  "
               f"({m['mode']}, {m['tokens']:,} tokens, {m['bytes']:,} bytes, "
               f"{m['eval_seconds']:.1f}s, {m['tokens_per_s']:,.0f} tok/s)")


@cli.command()
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data", "data_dir", required=True,
              type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Data directory with val shards and the tokenizer.")
@click.option("--mode", default=None, help="Shortcut for --set mode=... (the eval mode audited).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the checks as JSON here.")
@click.option("--prefix-tokens", type=click.IntRange(min=0), default=0,
              help="Validation prefix the behavioural checks run on [0: 4 x eval.seq_len].")
@click.option("--samples", type=click.IntRange(min=1), default=4,
              help="Tokens the causality check changes (one scoring pass each).")
@stage_options
def audit(model, data_dir, mode, json_out, prefix_tokens, samples, params_file, overrides):
    """Check that MODEL's eval obeys the rules: prints PASS/FAIL per check, exits 1 on any FAIL.

    \b
    Runs the eval mode's own scoring pass (TTT included) on a validation prefix:
    causality, normalisation, score before update; then byte accounting, size,
    provenance (no validation shard among the recorded inputs) and document isolation.
    """
    from stages.artifacts import write_json_atomic
    from stages.audit import audit as run
    from stages.audit import report
    from stages.evaluate import load_model

    if mode:
        overrides += (f"mode={mode}",)
    p = load_params(params_file, ("eval",), overrides)["eval"]
    checks = run(load_model(model), data_dir, p, prefix_tokens=prefix_tokens, samples=samples)
    if json_out is not None:
        write_json_atomic(json_out, report(checks, p))
    width = max(len(c.name) for c in checks)
    click.echo(f"{model}: audit of eval mode {p.mode}")
    for c in checks:
        click.echo(f"  {c.name:<{width}}  {'PASS' if c.passed else 'FAIL'}  {c.detail}")
    if not all(c.passed for c in checks):
        raise click.exceptions.Exit(1)


@cli.command(name="import")
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@stage_options
def import_(source, out, params_file, overrides):
    """Import a final_model.pt of the public baseline train_gpt.py as a checkpoint.

    The architecture is read from the tensor shapes; the model section of the params only supplies
    what the weights cannot tell (logit_softcap, rope_base, qk_gain_init), and its shape keys are
    ignored, so the repo's tiny params.yaml does not get in the way. A shape value given with --set
    (model.num_layers=9, ...) is checked against the weights. The file is loaded with
    weights_only=True; a pickle holding anything but tensors is refused.
    """
    from stages import artifacts
    from stages.importer import SHAPE_KEYS, import_baseline, load_baseline_file

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


@cli.command(name="inspect")
@click.argument("artifact", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON for machines.")
def inspect_(artifact, as_json):
    """Show an artifact's kind, format, config, parents, provenance and tensors."""
    from stages.describe import describe

    d = describe(artifact)
    if as_json:
        click.echo(json.dumps(d, indent=2, sort_keys=True))
        return
    click.echo(f"{d['file']}  ({d['file_bytes']:,} bytes, {d['sha256'][:19]}…)")
    if "blob" in d:
        b = d["blob"]
        click.echo(f"blob       v{b['format_version']} {b['codec']}, payload {b['payload_bytes']:,} "
                   f"bytes (x{b['ratio']}), {b['payload_sha256'][:19]}…")
    click.echo(f"kind       {d['kind']} (format v{d['format_version']}, golf {d['golf_version']})")
    click.echo("model      " + ", ".join(f"{k}={v}" for k, v in d["model_config"].items()))
    for role, h in d["parents"].items():
        click.echo(f"parent     {role}: {h}")
    for k, v in d["provenance"].items():
        text = json.dumps(v) if not isinstance(v, str) else v
        click.echo(f"provenance {k}: {text if len(text) < 90 else text[:87] + '...'}")
    for section, values in d["params"].items():
        click.echo(f"params     {section}: " + json.dumps(values, sort_keys=True))
    if "schemes" in d:
        click.echo(f"schemes    {d['schemes']}")
    click.echo(f"tensors    {len(d['tensors'])}, {d['total_numel']:,} values")
    width = max(len(t["name"]) for t in d["tensors"])
    for t in d["tensors"]:
        click.echo(f"  {t['name']:<{width}}  {t['dtype']:<8} {t['shape']}")


@cli.command(name="compare", context_settings={"ignore_unknown_options": True})
@click.argument("files", nargs=-1, type=click.UNPROCESSED, metavar="RUN_METRICS... --baseline "
                "BASELINE_METRICS...")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the result as JSON.")
@click.option("--min-gain", type=click.FloatRange(min=0), default=0.005,
              help="Improvement in mean val_loss (nats) that must hold.")
@click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.01,
              help="Significance level of the one-sided Welch t-test.")
def compare_(files, out, min_gain, alpha):
    """Compare `golf eval` metrics of candidate seeds with baseline seeds.

    Mean and std of val_loss and val_bpb on each side, and a one-sided Welch t-test of whether the
    candidate improves the mean val_loss by at least --min-gain nats at p < --alpha (the
    challenge's acceptance rule: 0.005 nats, p < 0.01). Example:

        golf compare runs/new/*/eval.json --baseline runs/base/*/eval.json
    """
    from stages.artifacts import write_json_atomic
    from stages.compare import compare

    files = list(files)
    if files.count("--baseline") != 1:
        raise click.UsageError("give the baseline runs once, after --baseline")
    split = files.index("--baseline")
    candidate, baseline = files[:split], files[split + 1:]
    if not candidate or not baseline:
        raise click.UsageError("need candidate RUN_METRICS before --baseline and files after it")

    def read(path: str) -> dict:
        try:
            return json.loads(Path(path).read_text())
        except json.JSONDecodeError as e:
            raise GolfError(f"{path}: not JSON ({e})") from None

    result = compare([read(p) for p in candidate], [read(p) for p in baseline],
                     min_gain_nats=min_gain, alpha=alpha)
    for side in ("candidate", "baseline"):
        s = result[side]
        click.echo(f"{side:<9}  n={s['n']}  val_loss {s['val_loss']['mean']:.5f} ± "
                   f"{s['val_loss']['std']:.5f}  val_bpb {s['val_bpb']['mean']:.5f} ± "
                   f"{s['val_bpb']['std']:.5f}")
    click.echo(f"any gain   p = {result['welch_any_gain']['p']:.3g}")
    click.echo(result["verdict"])
    if out:
        write_json_atomic(out, result)


def main() -> None:
    cli(prog_name="golf")
