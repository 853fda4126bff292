"""Provenance by content: which documents a model was trained or calibrated on, whatever the files.

Hashes of shard files say nothing about the tokens in them: the same validation tokens under another
name, with one header word changed, appended to a train shard or cut into pieces, hash differently.
So golf records and checks what was read by its documents:

- A document is the token ids after a BOS up to the next BOS (those before a split's first BOS
  count as one too). A split is one stream: its shards are read in order as one sequence, so where
  the shards are cut, and how they are named or headed, does not matter. Empty documents are left
  out (they carry nothing).
- A document's fingerprint is the 8-byte BLAKE2b digest of its ids as little-endian uint16 (the
  bytes a shard stores). The fingerprint of a split is the set of its documents' digests.
- `golf train` and `golf quantize --calib DATA_DIR` refuse a data folder whose train documents
  intersect its validation documents, and record what they read compactly: a `DocumentSet.record()`
  holds the counts and the SHA-256 of the sorted set of digests, not the digests themselves (a
  FineWeb train split has millions of documents; artifact metadata stays a few hundred bytes).
  Checkpoints record it as `provenance.train_documents`, quantized artifacts calibrated on data as
  `provenance.calibration.documents`; `golf average` keeps every input's record.
- `golf audit MODEL --data DATA_DIR` recomputes DATA_DIR's train set: every record in the model's
  provenance must be that set's (else the model was trained on other data, which cannot be checked
  against this validation split), and that set must not meet DATA_DIR's validation set. A model
  without such a record fails.

What this cannot see: a validation document altered by even one token (re-tokenized, a token
dropped, or merged into its neighbour by deleting the BOS between them) is another document. It
catches validation documents under any file name, header, shard cut, concatenation or order, which
is what copying data around produces; altering validation text to hide it is not an accident.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from stages.data.shards import (
    BOS_ID,
    ShardError,
    TrainTokens,
    ValTokens,
    load_val_tokens,
    shard_paths,
)

DIGEST_BYTES = 8


class ProvenanceError(ShardError):
    """Train or calibration data that holds validation documents."""


@dataclass(frozen=True)
class DocumentSet:
    hashes: np.ndarray  # uint64, sorted, unique
    documents: int  # non-empty documents, duplicates included
    tokens: int  # tokens of the split, BOS included

    def record(self) -> dict:
        """What an artifact records: counts and the SHA-256 of the sorted digests."""
        digest = hashlib.sha256(self.hashes.astype(">u8").tobytes()).hexdigest()
        return {"documents": self.documents, "unique": int(self.hashes.size),
                "tokens": self.tokens, "digest": "sha256:" + digest}

    def shared_with(self, other: DocumentSet) -> int:
        """How many distinct documents both sets hold."""
        return int(np.intersect1d(self.hashes, other.hashes, assume_unique=True).size)


def document_set(tokens: TrainTokens | ValTokens) -> DocumentSet:
    """The documents of a split, its shards read in order as one stream."""
    digests: list[bytes] = []
    current, length, total = None, 0, 0
    for shard in tokens.shards:
        ids = np.ascontiguousarray(shard, dtype="<u2")
        raw = memoryview(ids.view(np.uint8))
        total += int(ids.size)
        edges = [0, *np.flatnonzero(ids == BOS_ID).tolist(), int(ids.size)]
        for k in range(len(edges) - 1):
            lo, hi = edges[k], edges[k + 1]
            if k > 0:  # a BOS: the open document ends, a new one starts after it
                if length:
                    digests.append(current.digest())
                current, length, lo = None, 0, lo + 1
            if hi > lo:
                current = current or hashlib.blake2b(digest_size=DIGEST_BYTES)
                current.update(raw[2 * lo:2 * hi])
                length += hi - lo
    if length:
        digests.append(current.digest())
    hashes = np.unique(np.frombuffer(b"".join(digests), dtype="<u8"))
    return DocumentSet(hashes, len(digests), total)


def check_disjoint(train: DocumentSet, val: DocumentSet, what: str) -> None:
    """Refuse train documents that are validation documents (`what` names the data in the error)."""
    shared = train.shared_with(val)
    if shared:
        raise ProvenanceError(f"{what}: {shared} of its {train.hashes.size} distinct train "
                              f"documents are validation documents (same tokens, whatever file "
                              f"holds them); refusing to train or calibrate on validation data")


def train_documents(data_dir, train: TrainTokens) -> dict:
    """The record of `train`, checked against the validation split of the same folder when it has
    one (an official folder of train shards alone has none)."""
    docs = document_set(train)
    try:
        shard_paths(data_dir, "val")
    except ShardError:  # no validation split in this folder
        return docs.record()
    check_disjoint(docs, document_set(load_val_tokens(data_dir)), str(data_dir))
    return docs.record()
