"""What a training run reads and records about its inputs: the train shards, the tokenizer's
vocabulary (which fills in model.vocab_size), the parent hash and the provenance.

The parent is the data manifest's hash, or the shards' when there is no manifest (official shard
folders have none); the provenance names the data folder, the tokenizer's hash, every train
shard's hash and, by content, the train documents (stages/data/documents.py: refused when they
meet the folder's validation documents). Every token id is checked against the vocabulary.
`golf train` and a submission's train_gpt.py both build their checkpoints from this, so the two
record the same thing for the same data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from stages.data.documents import train_documents
from stages.data.shards import TrainTokens, load_tokenizer, load_train_tokens
from stages.files import sha256_bytes, sha256_file
from stages.model.config import ModelConfig


@dataclass(frozen=True)
class TrainInputs:
    model_config: ModelConfig  # with the tokenizer's vocabulary filled in
    data: TrainTokens
    parent: str
    provenance: dict


def train_inputs(data_dir: str | os.PathLike, tokenizer: str | os.PathLike,
                 model_config: ModelConfig) -> TrainInputs:
    """The train shards of `data_dir` with the SentencePiece model `tokenizer`."""
    data_dir, tokenizer = Path(data_dir), Path(tokenizer)
    vocab = load_tokenizer(tokenizer).get_piece_size()
    model_config = model_config.with_vocab(vocab, str(tokenizer))
    data = load_train_tokens(data_dir, vocab)
    manifest = data_dir / "manifest.json"
    parent = sha256_file(manifest) if manifest.is_file() else \
        sha256_bytes("".join(data.shard_hashes).encode())
    provenance = {"data_dir": str(data_dir), "tokenizer_sha256": sha256_file(tokenizer),
                  "train_shards": list(data.shard_hashes),
                  "train_documents": train_documents(data_dir, data)}
    return TrainInputs(model_config, data, parent, provenance)
