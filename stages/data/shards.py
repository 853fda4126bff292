"""Token shards in the official parameter-golf format, and the typed token sets read from them.

Shard layout (the challenge's format, as its train_gpt.py reads it): 256 little-endian int32 header words (magic 20240520, version 1, token
count, zeros), then `count` little-endian uint16 token ids. Each document is `[BOS] + tokens`, no EOS.

A data directory holds either golf's names (`train_000000.bin`, `val_000000.bin`, `tokenizer.model`,
`manifest.json`) or the official ones (`fineweb_train_*.bin`, `fineweb_val_*.bin` plus a `*.model`
tokenizer); both are read the same way.

Training and validation tokens are different types. Code that trains or calibrates takes
`TrainTokens`, and the only way to build one reads train shards, so validation data cannot reach an
optimizer by accident.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch

from stages.errors import GolfError
from stages.files import sha256_file, write_bytes_atomic

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
BOS_ID = 1


class ShardError(GolfError):
    """A shard whose header or size is wrong, or a data directory without shards."""


def write_shard(path: str | os.PathLike, tokens: np.ndarray) -> None:
    """Write `tokens` (any integer array with values < 65536) as one shard, atomically."""
    tokens = np.asarray(tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= 1 << 16):
        raise ShardError(f"{path}: token ids must fit uint16")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, tokens.size
    write_bytes_atomic(path, header.tobytes() + tokens.astype("<u2").tobytes())


def read_shard(path: str | os.PathLike) -> np.ndarray:
    """Read a shard as a read-only uint16 memmap, checking magic, version and size."""
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"{path}: not a shard file")
    size = path.stat().st_size
    if size < HEADER_BYTES:
        raise ShardError(f"{path}: {size} bytes is shorter than the {HEADER_BYTES}-byte shard header")
    header = np.fromfile(path, dtype="<i4", count=HEADER_INTS)
    if header[0] != SHARD_MAGIC:
        raise ShardError(f"{path}: bad magic {header[0]} (expected {SHARD_MAGIC})")
    if header[1] != SHARD_VERSION:
        raise ShardError(f"{path}: unsupported shard version {header[1]} (expected {SHARD_VERSION})")
    count = int(header[2])
    expected = HEADER_BYTES + 2 * count
    if size != expected:
        raise ShardError(f"{path}: size {size} does not match the header's {count} tokens "
                         f"(expected {expected} bytes)")
    if count == 0:
        return np.zeros(0, dtype=np.uint16)
    return np.memmap(path, dtype="<u2", mode="r", offset=HEADER_BYTES, shape=(count,))


def shard_paths(data_dir: str | os.PathLike, split: str) -> list[Path]:
    """The shards of `split` ('train' or 'val') in a data directory, in order."""
    if split not in ("train", "val"):
        raise ValueError(split)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ShardError(f"{data_dir}: no such data directory")
    found = sorted(data_dir.glob(f"{split}_*.bin")) + sorted(data_dir.glob(f"fineweb_{split}_*.bin"))
    # The CaseOps exports put per-token byte sidecars next to the val shards: they are not tokens.
    found = [p for p in found if "_bytes_" not in p.name]
    if not found:
        raise ShardError(f"{data_dir}: no {split} shards ({split}_*.bin or fineweb_{split}_*.bin)")
    return found


def load_tokenizer(path: str | os.PathLike) -> spm.SentencePieceProcessor:
    """The SentencePiece model at `path`, or a one-line error naming the file."""
    sp = spm.SentencePieceProcessor()
    try:
        sp.load_from_serialized_proto(Path(path).read_bytes())
    except OSError as e:
        raise ShardError(f"{path}: cannot read the tokenizer ({e.strerror})") from None
    except RuntimeError:
        raise ShardError(f"{path}: not a SentencePiece model") from None
    if sp.get_piece_size() == 0:
        raise ShardError(f"{path}: a tokenizer without pieces")
    return sp


def find_tokenizer(data_dir: str | os.PathLike) -> Path:
    """`tokenizer.model` in the data directory, else its only `*.model` file."""
    data_dir = Path(data_dir)
    own = data_dir / "tokenizer.model"
    if own.is_file():
        return own
    models = sorted(data_dir.glob("*.model"))
    if len(models) == 1:
        return models[0]
    if not models:
        raise ShardError(f"{data_dir}: no tokenizer (tokenizer.model or one *.model file)")
    raise ShardError(f"{data_dir}: several tokenizers ({', '.join(p.name for p in models)}); "
                     f"keep one or name it tokenizer.model")


@dataclass(frozen=True)
class _Tokens:
    shards: tuple[np.ndarray, ...]
    shard_hashes: tuple[str, ...]
    paths: tuple[Path, ...] = ()

    @property
    def num_tokens(self) -> int:
        return sum(int(s.size) for s in self.shards)

    def check_vocab(self, vocab: int) -> None:
        """Every token id is below `vocab` (one vectorised pass per shard)."""
        for k, shard in enumerate(self.shards):
            check_vocab(shard, vocab, self.paths[k] if k < len(self.paths) else f"shard {k}")

    def concatenated(self) -> np.ndarray:
        return np.concatenate([np.asarray(s) for s in self.shards]) if self.shards else \
            np.zeros(0, dtype=np.uint16)


@dataclass(frozen=True)
class TrainTokens(_Tokens):
    """Tokens of the train split. Build with `load_train_tokens` only."""


@dataclass(frozen=True)
class ValTokens(_Tokens):
    """Tokens of the validation split: scored, never trained on. Build with `load_val_tokens`."""


def check_vocab(shard: np.ndarray, vocab: int, path: Path | str) -> None:
    """Every token id of `shard` is below `vocab` (one vectorised pass), else a one-line error."""
    if shard.size and int(shard.max()) >= vocab:
        at = int(np.argmax(np.asarray(shard) >= vocab))
        raise ShardError(f"{path}: token id {int(shard[at])} at position {at} is outside the "
                         f"vocabulary ({vocab} pieces): this shard is not of this tokenizer")


def _load(data_dir: str | os.PathLike, split: str, vocab: int | None) -> dict:
    paths = tuple(shard_paths(data_dir, split))
    shards = tuple(read_shard(p) for p in paths)
    if vocab is not None:
        for shard, path in zip(shards, paths, strict=True):
            check_vocab(shard, vocab, path)
    return {"shards": shards, "shard_hashes": tuple(sha256_file(p) for p in paths), "paths": paths}


def load_train_tokens(data_dir: str | os.PathLike, vocab: int | None = None) -> TrainTokens:
    """The train split; with `vocab`, every id is checked to be below it."""
    return TrainTokens(**_load(data_dir, "train", vocab))


def load_val_tokens(data_dir: str | os.PathLike, vocab: int | None = None) -> ValTokens:
    """The validation split; with `vocab`, every id is checked to be below it."""
    return ValTokens(**_load(data_dir, "val", vocab))


class WindowSampler:
    """Seeded random (x, y) windows of `seq_len` tokens from the train shards only (shards are
    weighted by length). Training and GPTQ calibration both draw from it."""

    def __init__(self, data: TrainTokens, seq_len: int, seed: int):
        if not isinstance(data, TrainTokens):
            raise TypeError("WindowSampler reads TrainTokens only; validation tokens are never "
                            "trained or calibrated on")
        self.shards = [s for s in data.shards if s.size > seq_len + 1]
        if not self.shards:
            raise ShardError(f"no train shard has more than seq_len + 1 = {seq_len + 1} tokens")
        sizes = np.array([s.size - seq_len - 1 for s in self.shards], dtype=np.float64)
        self.weights = sizes / sizes.sum()
        self.seq_len = seq_len
        self.rng = np.random.default_rng(seed)

    def sample(self, num_seqs: int) -> tuple[torch.Tensor, torch.Tensor]:
        which = self.rng.choice(len(self.shards), size=num_seqs, p=self.weights)
        rows = []
        for k in which:
            shard = self.shards[k]
            start = int(self.rng.integers(0, shard.size - self.seq_len - 1))
            rows.append(np.asarray(shard[start:start + self.seq_len + 1], dtype=np.int64))
        batch = torch.from_numpy(np.stack(rows))  # (B, T + 1)
        return batch[:, :-1], batch[:, 1:]

    def state(self) -> dict:
        """What resume saves: the generator's state (the shards are fixed by the fingerprint)."""
        return {"kind": "random", "rng": self.rng.bit_generator.state}

    def restore(self, state: dict) -> None:
        if state.get("kind") != "random":
            raise ValueError("not a random window sampler's state")
        self.rng.bit_generator.state = state["rng"]
