"""The program inside a submission's train_gpt.py: golf's whole pipeline in one process.

    DATA_PATH=./data/datasets/fineweb10B_sp1024 \\
    TOKENIZER_PATH=./data/tokenizers/fineweb_1024_bpe.model \\
    torchrun --standalone --nproc_per_node=8 train_gpt.py

Environment, as the records take it: DATA_PATH (the shards' folder: fineweb_train_*.bin,
fineweb_val_*.bin, or golf's train_*/val_* names), TOKENIZER_PATH (its SentencePiece model; default:
the folder's own), SEED (overrides train.seed), RUN_ID (names the log, logs/RUN_ID.txt), and
GOLF_SET ("section.key=value;..." overrides of the frozen params, for trying a bundle at small size).

Every rank trains (stages/train/loop.py); rank 0 then averages the final and EMA weights, calibrates
and quantizes, compresses, writes final_model.golf, reads it back from disk, evaluates it, and logs
what reviewers look for. Each step is the same library call `golf train`, `average`, `quantize`,
`compress` and `eval` make, with the same inputs, so the model file is the same bytes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import sentencepiece as spm

from stages.artifacts import Artifact, to_bytes
from stages.budget import LIMIT_BYTES
from stages.codec.blob import pack
from stages.codec.params import CompressParams
from stages.data.shards import find_tokenizer, load_val_tokens
from stages.errors import GolfError
from stages.eval.evaluate import evaluate, load_model
from stages.eval.params import EvalParams
from stages.files import sha256_bytes, sha256_file, write_bytes_atomic
from stages.model.config import ModelConfig
from stages.params import ConfigError, build
from stages.quant.params import QuantizeParams
from stages.quant.quantize import quantize
from stages.train.average import AverageParams, average
from stages.train.distributed import is_main_process
from stages.train.inputs import train_inputs
from stages.train.loop import Hooks, train
from stages.train.params import TrainParams
from stages.train.runlog import RunLog, step_logger

MODEL_FILE = "final_model.golf"
SECTIONS = {"model": ModelConfig, "train": TrainParams, "average": AverageParams,
            "quantize": QuantizeParams, "compress": CompressParams, "eval": EvalParams}


def load_sections(frozen: dict, overrides: str) -> dict:
    """The params dataclasses from the frozen params and `GOLF_SET` ("a.b=1;c.d=x")."""
    values = {s: dict(frozen.get(s, {})) for s in SECTIONS}
    for item in filter(None, (i.strip() for i in overrides.split(";"))):
        key, _, raw = item.partition("=")
        section, _, name = key.strip().rpartition(".")
        if "=" not in item or section not in SECTIONS or not name:
            raise ConfigError(f"GOLF_SET: expected section.key=value, got {item!r}")
        try:
            values[section][name] = json.loads(raw)
        except json.JSONDecodeError:
            values[section][name] = raw
    return {s: build(cls, values[s]) for s, cls in SECTIONS.items()}


def train_and_average(p: dict, data_dir: str, tokenizer: Path, log: RunLog) -> Artifact | None:
    """Every rank trains; rank 0 gets final + EMA averaged as `golf average` does (else None)."""
    inputs = train_inputs(data_dir, tokenizer, p["model"])
    log(f"train_tokens: {inputs.data.num_tokens} shards: {len(inputs.data.shards)}")
    with log.phase("train_loop", "train"):
        result = train(inputs.data, inputs.model_config, p["train"],
                       parents={"data": inputs.parent}, provenance=inputs.provenance,
                       hooks=Hooks(on_step=step_logger(log, p["train"].max_steps,
                                                       p["train"].log_every)),
                       resume_dir=Path("resume") if p["train"].checkpoint_every else None)
    if not log.active:
        return None
    log.stopped(result.metrics)
    with log.phase("average", "train"):
        parents = {"input_0": sha256_bytes(to_bytes(result.final)),
                   "input_1": sha256_bytes(to_bytes(result.ema))}
        return average([("final", result.final), ("ema", result.ema)], p["average"],
                       parents=parents)


def quantize_and_pack(p: dict, averaged: Artifact, data_dir: str, log: RunLog) -> bytes:
    """The blob `golf quantize` then `golf compress` would write for `averaged`."""
    qp, cp = p["quantize"], p["compress"]
    kwargs: dict = {"parents": {"checkpoint": sha256_bytes(to_bytes(averaged))}}
    if qp.needs_calibration():
        from stages.quant.calibrate import calibrate  # only methods that need a Hessian
        with log.phase("calibration", "train"):
            kwargs["hessians"], kwargs["calibration"] = calibrate(averaged, data_dir, qp)
    with log.phase("quantize", "train"):
        q = quantize(averaged, qp, **kwargs)
    with log.phase("compress", "train"):
        blob = pack(to_bytes(q), cp.codec, cp.level, cp.layout)
        write_bytes_atomic(MODEL_FILE, blob)
    return blob


def evaluate_from_disk(p: dict, data_dir: str, tokenizer: Path, log: RunLog) -> dict:
    """Read the model file back and score the validation split, as `golf eval` does."""
    with log.phase("eval", "eval"):
        model = load_model(MODEL_FILE)
        trained_with = model.artifact.provenance.get("tokenizer_sha256")
        if trained_with and trained_with != sha256_file(tokenizer):
            raise GolfError(f"{tokenizer} is not the tokenizer the model was trained with")
        sp = spm.SentencePieceProcessor(model_file=str(tokenizer))
        return evaluate(model, load_val_tokens(data_dir), sp, p["eval"])


def run(frozen: dict, code_path: str) -> None:
    """The whole pipeline (see the module docstring)."""
    p = load_sections(frozen, os.environ.get("GOLF_SET", ""))
    if os.environ.get("SEED"):
        p["train"] = dataclasses.replace(p["train"], seed=int(os.environ["SEED"]))
    data_dir = os.environ.get("DATA_PATH", "")
    if not data_dir:
        raise GolfError("DATA_PATH is not set: the folder of the train and validation shards")
    tokenizer = Path(os.environ.get("TOKENIZER_PATH") or find_tokenizer(data_dir))
    run_id = os.environ.get("RUN_ID", f"seed{p['train'].seed}")
    log = RunLog(Path("logs") / f"{run_id}.txt", active=is_main_process(), echo=True)
    log.header(data_dir, tokenizer)
    log.hyperparameters(p)
    averaged = train_and_average(p, data_dir, tokenizer, log)
    if averaged is None:  # not rank 0
        return
    blob = quantize_and_pack(p, averaged, data_dir, log)
    m = evaluate_from_disk(p, data_dir, tokenizer, log)
    code = os.path.getsize(code_path)
    total = len(blob) + code
    log(f"Serialized model: {len(blob)} bytes ({MODEL_FILE})")
    log(f"Code size: {code} bytes (train_gpt.py, sha256 {sha256_file(code_path)[7:]})")
    log(f"Total submission size: {total} bytes of {LIMIT_BYTES} "
        f"{'fits' if total <= LIMIT_BYTES else 'OVER THE LIMIT'}")
    log(f"final_eval mode:{m['mode']} val_loss:{m['val_loss']:.6f} val_bpb:{m['val_bpb']:.6f} "
        f"tokens:{m['tokens']} bytes:{m['bytes']} eval_time:{m['eval_seconds'] * 1000:.0f}ms")
    log.close_ledger()


def main(frozen: dict, code_path: str) -> None:
    """`run`, with golf's one-line errors and exit status 1 instead of tracebacks."""
    try:
        run(frozen, code_path)
    except (GolfError, ImportError, OSError) as e:
        print(f"Error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
