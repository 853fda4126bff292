"""The one artifact schema: self-describing safetensors files passed between stages.

Every artifact is a safetensors file (never pickle) whose metadata holds a single key, `golf`, with a
sorted JSON document:

    {"kind": "checkpoint" | "quantized", "format_version": 1, "model_config": {...},
     "params": {...resolved params of the stage that wrote it...},
     "parents": {"<role>": "sha256:<hex>", ...}, "provenance": {...}, "golf_version": "0.1.0",
     "extra": {...kind-specific...}}

One key, because safetensors does not keep the order of several metadata keys, and a file that is not
byte-identical across runs defeats DVC's caching. Loading checks the kind and the format version and
names the file and the problem in one line when they do not match.

Writes go to a temporary name in the destination folder and are renamed into place, so a failure
never leaves a half-written artifact behind (DVC does not clean up after a failed stage).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from stages import __version__
from stages.config import ModelConfig, build_section
from stages.errors import GolfError

FORMAT_VERSION = 1
META_KEY = "golf"
KINDS = ("checkpoint", "quantized")


class ArtifactError(GolfError):
    """An artifact that is missing, damaged, of the wrong kind or of an unknown format version."""


@dataclass
class Artifact:
    """An artifact in memory: tensors plus the metadata that describes them."""

    kind: str
    tensors: dict[str, torch.Tensor]
    model_config: ModelConfig
    params: dict[str, Any] = field(default_factory=dict)
    parents: dict[str, str] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    golf_version: str = __version__

    def metadata(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "format_version": self.format_version,
            "golf_version": self.golf_version,
            "model_config": vars(self.model_config).copy(),
            "params": self.params,
            "parents": self.parents,
            "provenance": self.provenance,
            "extra": self.extra,
        }


# ---------------------------------------------------------------------------------------------------
# Hashing and atomic writes
# ---------------------------------------------------------------------------------------------------

def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return "sha256:" + h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


# ---------------------------------------------------------------------------------------------------
# Save / load
# ---------------------------------------------------------------------------------------------------

def to_bytes(artifact: Artifact) -> bytes:
    """Serialise to safetensors bytes; identical content gives identical bytes."""
    if artifact.kind not in KINDS:
        raise ValueError(f"unknown artifact kind {artifact.kind!r}")
    meta = json.dumps(artifact.metadata(), sort_keys=True, separators=(",", ":"))
    tensors = {k: v.detach().contiguous().cpu() for k, v in artifact.tensors.items()}
    return st_save(tensors, metadata={META_KEY: meta})


def save(artifact: Artifact, path: str | os.PathLike) -> str:
    """Write `artifact` to `path` atomically; return its sha256."""
    data = to_bytes(artifact)
    write_bytes_atomic(path, data)
    return sha256_bytes(data)


def from_bytes(data: bytes, source: str, expect: str | tuple[str, ...] | None = None) -> Artifact:
    """Parse safetensors bytes produced by `to_bytes`; `source` names the file in errors."""
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, OSError) as e:
        raise ArtifactError(f"{source}: not a readable safetensors artifact (truncated or damaged?): "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    meta_raw = _read_metadata(data)
    if meta_raw is None or META_KEY not in meta_raw:
        raise ArtifactError(f"{source}: safetensors file without golf metadata (not a golf artifact)")
    try:
        meta = json.loads(meta_raw[META_KEY])
    except json.JSONDecodeError:
        raise ArtifactError(f"{source}: golf metadata is not valid JSON") from None
    kind = meta.get("kind")
    version = meta.get("format_version")
    if kind not in KINDS:
        raise ArtifactError(f"{source}: unknown artifact kind {kind!r}")
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{source}: {kind} format version {version} is not supported "
                            f"(this golf reads version {FORMAT_VERSION})")
    if expect is not None:
        allowed = (expect,) if isinstance(expect, str) else expect
        if kind not in allowed:
            raise ArtifactError(f"{source}: expected a {' or '.join(allowed)} artifact, got {kind}")
    return Artifact(
        kind=kind,
        tensors=tensors,
        model_config=build_section("model", meta["model_config"]),
        params=meta.get("params", {}),
        parents=meta.get("parents", {}),
        provenance=meta.get("provenance", {}),
        extra=meta.get("extra", {}),
        format_version=version,
        golf_version=meta.get("golf_version", "?"),
    )


def load(path: str | os.PathLike, expect: str | tuple[str, ...] | None = None) -> Artifact:
    """Read an artifact from disk, checking its kind (if `expect` is given) and format version."""
    return load_with_hash(path, expect)[0]


def load_with_hash(path: str | os.PathLike,
                   expect: str | tuple[str, ...] | None = None) -> tuple[Artifact, str]:
    """`load`, plus the sha256 of the bytes read (for recording it as a parent): one read."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file")
    data = path.read_bytes()
    return from_bytes(data, str(path), expect), sha256_bytes(data)


def _read_metadata(data: bytes) -> dict[str, str] | None:
    """The `__metadata__` of a safetensors buffer (the header is JSON after an 8-byte length)."""
    if len(data) < 8:
        return None
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        return None
    try:
        header = json.loads(data[8:8 + n])
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return header.get("__metadata__")
