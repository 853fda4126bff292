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

Writes are atomic (stages/files.py). The model config is stored in artifact format 1's layout
(`ModelConfig.to_metadata`), so every artifact ever written still loads.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from stages import __version__
from stages.errors import GolfError
from stages.files import sha256_bytes, write_bytes_atomic
from stages.model.config import ModelConfig
from stages.params import ConfigError
from stages.tensorfile import META_KEY, HeaderError, read_header

FORMAT_VERSION = 1
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
            "model_config": self.model_config.to_metadata(),
            "params": self.params,
            "parents": self.parents,
            "provenance": self.provenance,
            "extra": self.extra,
        }


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
    try:
        meta_raw = read_header(data).metadata
    except HeaderError:
        meta_raw = {}
    if META_KEY not in meta_raw:
        raise ArtifactError(f"{source}: safetensors file without golf metadata (not a golf artifact)")
    try:
        meta = json.loads(meta_raw[META_KEY])
    except json.JSONDecodeError:
        raise ArtifactError(f"{source}: golf metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"{source}: golf metadata is not a JSON object")
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
    try:
        model_config = ModelConfig.from_metadata(meta["model_config"])
    except (ConfigError, KeyError, TypeError) as e:
        raise ArtifactError(f"{source}: its model config is not valid ({e})") from None
    return Artifact(
        kind=kind,
        tensors=tensors,
        model_config=model_config,
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
