"""Every record preset at reduced width, every feature on: train, average, quantize, compress, eval,
audit, through the real `golf` commands.

    python benchmarks/presets.py [--steps 200] [--width 128] [--data data/tokens] [PRESET ...]

Each preset keeps its depth, its features, its optimizer and its quantizer, codec and eval mode
(TTT included); only the width, the batch, the sequence length and the calibration volume shrink
to fit a CPU, and the run is step-capped (no wall-clock cap) so it is the same run on any machine.
Prints per preset: parameters, the first and last logged train loss, val_bpb (and for a TTT
preset the same blob's sliding-window val_bpb without TTT), model and code bytes, the audit
verdict, and the seconds of training and of eval. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing
RECORD_STEPS = 5000  # about what the record stacks train for in 600 s on 8 H100s

from stages.train.params import TrainParams  # noqa: E402


def reduced(preset: Path, width: int, steps: int) -> dict:
    """The preset's params, shrunk to CPU size, keeping every switch it sets."""
    p = yaml.safe_load(preset.read_text())
    heads = max(2, width // 32)
    p["model"].pop("vocab_size", None)  # the data's tokenizer sets it
    p["model"].update(model_dim=width, num_heads=heads, num_kv_heads=heads // 2, bigram_dim=32,
                      ve_dim=32)
    p["train"].update(max_steps=steps, max_wallclock_seconds=0, schedule="steps",
                      batch_tokens=4096, seq_len=256, autocast="off", compile="off", log_every=10,
                      val_every=0)
    # The EMA's horizon, 1 / (1 - decay), is ~300 steps of a record's ~5,000; over a 200-step run
    # that horizon would leave half of the EMA at the initial weights. Keep its share of the run.
    decay = p["train"].get("ema_decay", TrainParams().ema_decay)
    if decay > 0:
        p["train"]["ema_decay"] = round(max(0.0, 1 - (1 - decay) * RECORD_STEPS / steps), 4)
    p["quantize"].update(calib_batches=2, calib_batch_seqs=4, calib_seq_len=256,
                         keep_float_max_numel=4096)
    p["eval"].update(seq_len=256, stride=64, batch_seqs=8)
    return p


def golf(*args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("golf")
    if exe is None:
        sys.exit("golf is not installed: pip install -e .")
    r = subprocess.run([exe, *args], capture_output=True, text=True)
    if r.returncode != 0:
        lines = [ln for ln in r.stderr.replace("\r", "\n").splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("Error")] or lines[-1:]  # not the bars
        raise RuntimeError(f"golf {args[0]} failed: {errors[-1] if errors else r.returncode}")
    return r


def run_preset(preset: Path, data: Path, work: Path, params: dict) -> dict:
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    common = ["--params", str(work / "params.yaml")]
    t0 = time.perf_counter()
    golf("train", str(data), "--out", str(work / "run"), *common)
    train_s = time.perf_counter() - t0
    golf("average", str(work / "run/final.safetensors"), str(work / "run/ema.safetensors"),
         "--out", str(work / "avg.safetensors"), *common)
    golf("quantize", str(work / "avg.safetensors"), "--calib", str(data),
         "--out", str(work / "q.safetensors"), *common)
    golf("compress", str(work / "q.safetensors"), "--out", str(work / "model.golf"),
         "--report", str(work / "size.json"), *common)
    t0 = time.perf_counter()
    golf("eval", str(work / "model.golf"), "--data", str(data), "--out", str(work / "eval.json"),
         *common)
    eval_s = time.perf_counter() - t0
    no_ttt = None
    if params["eval"].get("mode") == "ttt":  # the same blob without TTT: what TTT gained
        golf("eval", str(work / "model.golf"), "--data", str(data), "--out",
             str(work / "eval_sliding.json"), *common, "--set", "mode=sliding")
        no_ttt = json.loads((work / "eval_sliding.json").read_text())["val_bpb"]
    audit = subprocess.run([shutil.which("golf"), "audit", str(work / "model.golf"), "--data",
                            str(data), "--json", str(work / "audit.json"), *common],
                           capture_output=True, text=True)
    metrics = json.loads((work / "run/train_metrics.json").read_text())
    losses = [float(m) for m in re.findall(r"train_loss[:=] ?([0-9.]+)",
                                           (work / "run/train.log").read_text())]
    size = json.loads((work / "size.json").read_text())
    return {"preset": preset.stem, "params": metrics.get("parameters"),
            "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None,
            "val_bpb": json.loads((work / "eval.json").read_text())["val_bpb"],
            "val_bpb_no_ttt": no_ttt,
            "model_bytes": size.get("model_bytes"), "code_bytes": size.get("code_bytes"),
            "audit": "PASS" if audit.returncode == 0 else "FAIL",
            "train_s": train_s, "eval_s": eval_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("presets", nargs="*", type=Path,
                    default=sorted((ROOT / "configs").glob("*.yaml")))
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--data", type=Path, default=ROOT / "data/tokens")
    args = ap.parse_args()
    print(f"{'preset':<10} {'params':>10} {'loss0':>7} {'loss_end':>8} {'val_bpb':>8} "
          f"{'no TTT':>7} {'model B':>9} {'code B':>7} {'audit':>5} {'train s':>8} {'eval s':>7}",
          flush=True)
    for preset in args.presets:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                r = run_preset(preset, args.data, Path(tmp), reduced(preset, args.width, args.steps))
            except RuntimeError as e:
                print(f"{preset.stem:<10} {e}", flush=True)
                continue
        print(f"{r['preset']:<10} {r['params'] or 0:>10,} {r['loss_first'] or 0:>7.3f} "
              f"{r['loss_last'] or 0:>8.3f} {r['val_bpb']:>8.4f} "
              f"{'' if r['val_bpb_no_ttt'] is None else format(r['val_bpb_no_ttt'], '.4f'):>7} "
              f"{r['model_bytes'] or 0:>9,} "
              f"{r['code_bytes'] or 0:>7,} {r['audit']:>5} {r['train_s']:>8.1f} "
              f"{r['eval_s']:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
