"""The provenance check of `golf audit`: what a model records it was made from, held to DATA_DIR.

An artifact copies its inputs' provenance forward from stage to stage (an average keeps every
input's, under `inputs`), so the blob that is scored still says what it was trained and calibrated
on. The check FAILs when

- a hash it records (shard files, the parents of every stage) is a DATA_DIR validation shard's;
- it records no tokenizer, or another one than DATA_DIR's (the same vocabulary size is not enough);
- it records no training data by content: `train_documents` missing or empty, for the model or any
  averaged input (provenance stripped, or an artifact from before golf recorded it);
- a recorded document set (of a training, or of the calibration) is not DATA_DIR's train split:
  the model was made from other data, which this validation split cannot vouch for;
- DATA_DIR's train split holds documents of its validation split (stages/data/documents.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from stages.data.documents import DocumentSet, document_set
from stages.data.shards import ShardError, ValTokens, load_train_tokens
from stages.eval.evaluate import LoadedModel


def _recorded_hashes(value, path: str) -> Iterator[tuple[str, str]]:
    """(path, hash) of every "sha256:..." string inside a JSON-like value."""
    if isinstance(value, str) and value.startswith("sha256:"):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _recorded_hashes(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _recorded_hashes(v, f"{path}[{i}]")


def training_records(provenance: dict, path: str = "provenance") -> list[tuple[str, dict | None]]:
    """(where, record or None) of every training behind the model: one per averaged input
    (recursively), else its own `train_documents`."""
    inputs = provenance.get("inputs")
    if isinstance(inputs, list) and inputs:
        out = []
        for i, p in enumerate(inputs):
            out += training_records(p if isinstance(p, dict) else {}, f"{path}.inputs[{i}]")
        return out
    record = provenance.get("train_documents")
    ok = isinstance(record, dict) and bool(record.get("digest")) and bool(record.get("documents"))
    return [(f"{path}.train_documents", record if ok else None)]


def calibration_record(provenance: dict) -> tuple[str, dict | None] | None:
    """The calibration's document record, when the model was calibrated on data."""
    calib = provenance.get("calibration")
    if not isinstance(calib, dict) or calib.get("source") != "train_shards":
        return None
    record = calib.get("documents")
    return "provenance.calibration.documents", record if isinstance(record, dict) else None


def _content_problem(model: LoadedModel, data_dir: Path, val: ValTokens,
                     tokenizer_sha: str) -> tuple[str | None, str]:
    """(what fails or None, what was checked)."""
    prov = model.artifact.provenance
    recorded = prov.get("tokenizer_sha256")
    if not recorded:
        return "no tokenizer recorded (provenance missing or stripped)", ""
    if recorded != tokenizer_sha:
        return (f"the model's tokenizer {str(recorded)[:19]}… is not DATA_DIR's "
                f"{tokenizer_sha[:19]}…"), ""
    records = training_records(prov)
    calib = calibration_record(prov)
    missing = [where for where, r in records + ([calib] if calib else []) if r is None]
    if missing:
        return f"no record of the data it was made from by content ({missing[0]})", ""
    try:
        train: DocumentSet = document_set(load_train_tokens(data_dir, model.config.vocab_size))
    except ShardError as e:
        return f"DATA_DIR's train split, to check the records against, cannot be read ({e})", ""
    ours = train.record()["digest"]
    for where, r in records + ([calib] if calib else []):
        if r.get("digest") != ours:
            return (f"{where} is not DATA_DIR's train split ({r.get('documents')} documents, "
                    f"{str(r.get('digest'))[:19]}…): made from other data"), ""
    shared = train.shared_with(document_set(val))
    if shared:
        return f"DATA_DIR's train split holds {shared} validation documents", ""
    return None, (f"tokenizer is DATA_DIR's; {len(records)} training record(s)"
                  f"{' and the calibration' if calib else ''} are DATA_DIR's train split "
                  f"({train.documents:,} documents, none a validation document)")


def provenance_check(model: LoadedModel, data_dir: Path, val: ValTokens,
                     tokenizer_sha: str) -> tuple[bool, str]:
    """(passed, detail) of the provenance check (see the module docstring)."""
    art = model.artifact
    recorded = [*_recorded_hashes(art.provenance, "provenance"),
                *_recorded_hashes(art.parents, "parents")]
    hits = [p for p, h in recorded if h in set(val.shard_hashes)]
    if hits:
        return False, f"validation shard recorded as an input: {', '.join(hits)}"
    problem, checked = _content_problem(model, data_dir, val, tokenizer_sha)
    if problem:
        return False, problem
    return True, (f"{checked}; {len(recorded)} recorded hashes, none of the "
                  f"{len(val.shard_hashes)} validation shards")
