"""`golf tokenize`: corpus -> SentencePiece tokenizer + official-format token shards + manifest.

The split is fixed by the text alone: a document is validation when the first 8 bytes of the SHA-256
of its UTF-8 text, read as a big-endian fraction of 2^64, are below `val_fraction`. It does not depend on
document order, and since duplicates are dropped when the corpus is read, no validation text can
appear in train.

golf trains its tokenizers on the train documents only and losslessly (identity normalisation,
whitespace kept, byte fallback), so the byte table counts exactly the raw UTF-8 bytes of the validation
text. That is checked here on every run; a tokenizer given with `--tokenizer` that normalises text
(the official sp1024 does NFKC and collapses whitespace) is used as it is, and the manifest records
how far its table total is from the raw byte count.

The output folder is built beside `--out` and swapped in whole once complete (stages/files.py); an
existing `--out` is replaced only when it is empty or a data folder golf wrote (its manifest says
so), and a symlink is followed: its target is replaced, the link kept.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar

import numpy as np
import sentencepiece as spm

from stages.data.bpb import build_byte_table, stream_bytes
from stages.data.corpus import Corpus
from stages.data.shards import BOS_ID, write_shard
from stages.errors import GolfError
from stages.files import (
    OutputError,
    atomic_dir,
    check_not_cwd,
    sha256_file,
    write_bytes,
    write_json_atomic,
)
from stages.params import Range, param, to_dict, validate

MANIFEST_FORMAT = "golf-tokens/v1"
SPLIT_RULE = ("validation iff int.from_bytes(sha256(utf8(text))[:8], 'big') / 2**64 < val_fraction; "
              "text = document with surrounding whitespace stripped; exact duplicates kept once")


class TokenizeError(GolfError):
    """The corpus or tokenizer cannot give a correct tokenization."""


@dataclass(frozen=True)
class TokenizeParams:
    """The `tokenize` section: how `golf tokenize` turns a corpus into a tokenizer and shards."""

    SECTION: ClassVar[str] = "tokenize"
    vocab_size: Annotated[int, Range(260, 65536)] = param(
        1024, "pieces of the trained tokenizer (4 control ids + 256 byte-fallback ids at least)")
    val_fraction: Annotated[float, Range(0, 1, lo_open=True, hi_open=True)] = param(
        0.1, "share of the hash space whose documents go to validation: the split depends only on "
             "the text, so the same text can never land on both sides")
    max_docs: Annotated[int, Range(0)] = param(0, "use the first N documents; 0 = all")
    shard_tokens: Annotated[int, Range(1)] = param(
        100_000_000, "tokens per shard, as the official exporter writes them")
    character_coverage: Annotated[float, Range(0.9, 1)] = param(
        0.9995, "SentencePiece: share of characters covered by pieces (the rest byte-fallback)")

    def __post_init__(self) -> None:
        validate(self)


def is_validation(text: str, val_fraction: float) -> bool:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < val_fraction


def split_documents(docs: list[str], val_fraction: float) -> tuple[list[str], list[str]]:
    """(train, val) documents by the hash rule above, each in corpus order."""
    train, val = [], []
    for doc in docs:
        (val if is_validation(doc, val_fraction) else train).append(doc)
    return train, val


def train_tokenizer(docs: list[str], params: TokenizeParams) -> bytes:
    """Train a lossless SentencePiece BPE model on `docs`; return the serialized model."""
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(docs),
            model_writer=model,
            model_type="bpe",
            vocab_size=params.vocab_size,
            character_coverage=params.character_coverage,
            byte_fallback=True,
            split_digits=True,
            # Lossless: no normalisation, whitespace runs and leading spaces kept as they are.
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            allow_whitespace_only_pieces=True,
            # The trainer silently skips longer sentences (4192 bytes by default): keep every document.
            max_sentence_length=1 << 30,
            pad_id=0, bos_id=BOS_ID, eos_id=2, unk_id=3,
            hard_vocab_limit=True,
            num_threads=os.cpu_count() or 1,
            minloglevel=2,
        )
    except RuntimeError as e:
        msg = str(e).strip().splitlines()[-1] if str(e).strip() else "SentencePiece training failed"
        if "smaller than required_chars" in msg:
            need = re.search(r"(\d+) vs (\d+)", msg)
            raise TokenizeError(f"tokenize.vocab_size={params.vocab_size} is too small for this corpus: "
                                f"control, byte and character pieces need "
                                f"{need.group(2) if need else 'more'}; raise it or lower "
                                f"tokenize.character_coverage") from None
        if "Vocabulary size too high" in msg:
            most = re.search(r"<= (\d+)", msg)
            raise TokenizeError(f"tokenize.vocab_size={params.vocab_size} is larger than this corpus "
                                f"supports (at most {most.group(1) if most else '?'})") from None
        raise TokenizeError(f"SentencePiece training failed: {msg}") from None
    return model.getvalue()


def _encode_stream(sp: spm.SentencePieceProcessor, docs: list[str],
                   on_progress: Callable[[int], None] | None) -> np.ndarray:
    parts = []
    batch = 256
    for i in range(0, len(docs), batch):
        for ids in sp.encode(docs[i:i + batch]):
            parts.append(np.asarray([BOS_ID, *ids], dtype=np.uint16))
        if on_progress:
            on_progress(min(batch, len(docs) - i))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


def _split_documents(stream: np.ndarray) -> list[np.ndarray]:
    """The token ids of each document of a `[BOS] + ids` stream (encoders never emit BOS)."""
    starts = np.flatnonzero(stream == BOS_ID)
    return [stream[a + 1:b] for a, b in zip(starts, [*starts[1:], stream.size], strict=True)]


def _write_split(out: Path, split: str, tokens: np.ndarray, shard_tokens: int) -> list[dict]:
    shards = []
    for k, start in enumerate(range(0, max(len(tokens), 1), shard_tokens)):
        path = out / f"{split}_{k:06d}.bin"
        chunk = tokens[start:start + shard_tokens]
        write_shard(path, chunk)
        shards.append({"file": path.name, "tokens": int(chunk.size), "sha256": sha256_file(path)})
    return shards


def _load_tokenizer(train_docs: list[str], params: TokenizeParams,
                    tokenizer_model: str | os.PathLike | None
                    ) -> tuple[bytes, spm.SentencePieceProcessor]:
    """The serialized model (trained on `train_docs`, or read from `tokenizer_model`), loaded."""
    if tokenizer_model is None:
        model_bytes = train_tokenizer(train_docs, params)
    else:
        try:
            model_bytes = Path(tokenizer_model).read_bytes()
        except OSError as e:
            raise TokenizeError(f"{tokenizer_model}: cannot read tokenizer ({e.strerror})") from None
    sp = spm.SentencePieceProcessor()
    try:
        sp.load_from_serialized_proto(model_bytes)
    except RuntimeError:
        raise TokenizeError(f"{tokenizer_model}: not a SentencePiece model") from None
    if sp.get_piece_size() > 1 << 16:
        raise TokenizeError(f"tokenizer has {sp.get_piece_size()} pieces; shards hold uint16 ids")
    if sp.bos_id() != BOS_ID:
        raise TokenizeError(f"tokenizer's BOS id is {sp.bos_id()}; the shard format needs {BOS_ID}")
    return model_bytes, sp


def _check_bytes(sp: spm.SentencePieceProcessor, val_tokens: np.ndarray, val_docs: list[str],
                 val_text_bytes: int, trained_here: bool) -> tuple[int, bool]:
    """The byte table's validation total and whether the tokenizer round-trips the text; for a
    lossless tokenizer the total must be the raw UTF-8 length (and golf's own must be lossless)."""
    val_table_bytes = stream_bytes(val_tokens, build_byte_table(sp))
    lossless = all(sp.decode(ids.tolist()) == d
                   for ids, d in zip(_split_documents(val_tokens), val_docs, strict=True))
    if trained_here and not lossless:
        marker = next((i for i, d in enumerate(val_docs) if "\u2581" in d), None)
        raise TokenizeError("the trained tokenizer does not round-trip the validation text" + (
            f": validation document {marker} contains U+2581, the SentencePiece space marker, "
            f"which decodes as a space; replace it in the corpus" if marker is not None else ""))
    if lossless and val_table_bytes != val_text_bytes:
        raise TokenizeError(f"byte accounting is wrong: the tokenizer's byte table counts "
                            f"{val_table_bytes} validation bytes but the text has {val_text_bytes}")
    return val_table_bytes, lossless


def is_data_dir(path: Path) -> bool:
    """Whether `path` holds a data folder `golf tokenize` wrote (its manifest says so)."""
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == MANIFEST_FORMAT


def check_out_dir(out_dir: str | os.PathLike) -> None:
    """`out_dir` may be replaced: absent, an empty folder, or a data folder golf wrote."""
    path = Path(out_dir)
    check_not_cwd(path, out_dir)
    target = path.resolve()
    if target.exists() and not target.is_dir():
        raise OutputError(f"--out {out_dir} exists and is not a folder")
    if target.is_dir() and any(target.iterdir()) and not is_data_dir(target):
        raise OutputError(f"--out {out_dir} is a folder golf did not write (no manifest.json of "
                          f"{MANIFEST_FORMAT}); refusing to replace it: remove it or choose "
                          f"another folder")


def tokenize(corpus: Corpus, params: TokenizeParams, out_dir: str | os.PathLike,
             tokenizer_model: str | os.PathLike | None = None,
             on_progress: Callable[[int], None] | None = None) -> dict:
    """Tokenize `corpus` into `out_dir` (replaced as a whole, atomically). Returns the manifest.

    Args:
        corpus: the documents (see `stages.data.corpus.load_corpus`).
        params: the `tokenize` section.
        out_dir: where `tokenizer.model`, the shards and `manifest.json` go.
        tokenizer_model: reuse this SentencePiece model instead of training one.
        on_progress: called with the number of documents just encoded.
    """
    check_out_dir(out_dir)
    docs = corpus.docs[:params.max_docs] if params.max_docs else corpus.docs
    train_docs, val_docs = split_documents(docs, params.val_fraction)
    if not val_docs or not train_docs:
        raise TokenizeError(f"{corpus.name}: {len(docs)} documents give {len(train_docs)} train and "
                            f"{len(val_docs)} validation documents; both must be non-empty")

    model_bytes, sp = _load_tokenizer(train_docs, params, tokenizer_model)
    train_tokens = _encode_stream(sp, train_docs, on_progress)
    val_tokens = _encode_stream(sp, val_docs, on_progress)

    val_text_bytes = sum(len(d.encode("utf-8")) for d in val_docs)
    val_table_bytes, lossless = _check_bytes(sp, val_tokens, val_docs, val_text_bytes,
                                             trained_here=tokenizer_model is None)

    with atomic_dir(out_dir) as tmp:  # replaces out_dir whole, only once everything is written
        write_bytes(tmp / "tokenizer.model", model_bytes)
        manifest = {
            "format": MANIFEST_FORMAT,
            "corpus": corpus.name,
            "corpus_info": corpus.info,
            "params": to_dict(params),
            "tokenizer": {
                "file": "tokenizer.model",
                "sha256": sha256_file(tmp / "tokenizer.model"),
                "vocab_size": sp.get_piece_size(),
                "trained_here": tokenizer_model is None,
                "lossless": lossless,
            },
            "split": {"rule": SPLIT_RULE, "val_fraction": params.val_fraction,
                      "documents": len(docs)},
            "bos_id": BOS_ID,
            "eos": "none",
            "train": {
                "documents": len(train_docs),
                "tokens": int(train_tokens.size),
                "text_bytes": sum(len(d.encode("utf-8")) for d in train_docs),
                "shards": _write_split(tmp, "train", train_tokens, params.shard_tokens),
            },
            "val": {
                "documents": len(val_docs),
                "tokens": int(val_tokens.size),
                "text_bytes": val_text_bytes,
                "table_bytes": val_table_bytes,
                "shards": _write_split(tmp, "val", val_tokens, params.shard_tokens),
            },
        }
        write_json_atomic(tmp / "manifest.json", manifest)
    return manifest
