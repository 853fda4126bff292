"""The one artifact schema: self-describing safetensors files passed between stages.

Every artifact is a safetensors file (never pickle) whose metadata holds a single key, `golf`, with a
sorted JSON document:

    {"kind": "checkpoint" | "quantized", "format_version": 1, "model_config": {...},
     "params": {...resolved params of the stage that wrote it...},
     "parents": {"<role>": "sha256:<hex>", ...}, "provenance": {...}, "golf_version": "0.1.0",
     "extra": {...kind-specific...}}

One key, because safetensors does not keep the order of several metadata keys, and a file that is not
byte-identical across runs defeats DVC's caching.

Loading checks everything before any tensor is used, and names the file and the problem in one line:
the kind and the format version; the structure of the metadata (each key of the type it must have);
the tensors against the artifact's own model config (a checkpoint holds exactly the model's
parameters, in a float dtype, of the config's shapes; a quantized artifact exactly the tensors its
storage table implies, of their dtypes and shapes, codes within their bit width); and that no float
tensor holds NaN or infinity. Saving refuses NaN and infinity too.

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
from stages.model.gpt import parameter_shapes
from stages.params import ConfigError
from stages.tensorfile import (
    META_KEY,
    QUANT_SUFFIX,
    SCALE_SUFFIX,
    HeaderError,
    qmax_for,
    read_header,
)

FORMAT_VERSION = 1
KINDS = ("checkpoint", "quantized")
SCHEMES = ("int_per_row", "float16", "float32", "raw")
# Metadata keys and the JSON type each must have (model_config is required, the others default).
META_TYPES = {"model_config": dict, "params": dict, "parents": dict, "provenance": dict,
              "extra": dict, "golf_version": str}


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
    check_finite(artifact.tensors, "the artifact to write")
    meta = json.dumps(artifact.metadata(), sort_keys=True, separators=(",", ":"))
    tensors = {k: v.detach().contiguous().cpu() for k, v in artifact.tensors.items()}
    return st_save(tensors, metadata={META_KEY: meta})


def save(artifact: Artifact, path: str | os.PathLike) -> str:
    """Write `artifact` to `path` atomically; return its sha256."""
    data = to_bytes(artifact)
    write_bytes_atomic(path, data)
    return sha256_bytes(data)


def _metadata(data: bytes, source: str) -> dict[str, Any]:
    """golf's metadata document, its kind, format version and key types checked."""
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
    kind, version = meta.get("kind"), meta.get("format_version")
    if kind not in KINDS:
        raise ArtifactError(f"{source}: unknown artifact kind {kind!r}")
    if type(version) is not int:
        raise ArtifactError(f"{source}: format_version must be a whole number, got {version!r} "
                            f"({_json_type(version)}); this golf reads version {FORMAT_VERSION}")
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{source}: {kind} format version {version} is not supported "
                            f"(this golf reads version {FORMAT_VERSION})")
    if "model_config" not in meta:
        raise ArtifactError(f"{source}: golf metadata has no 'model_config'")
    for key, tp in META_TYPES.items():
        if key in meta and not isinstance(meta[key], tp):
            raise ArtifactError(f"{source}: golf metadata '{key}' must be {_json_type(tp())}, "
                                f"got {_json_type(meta[key])}")
    bad = [k for k, v in meta.get("parents", {}).items() if not isinstance(v, str)]
    if bad:
        raise ArtifactError(f"{source}: golf metadata 'parents.{bad[0]}' must be a string (a hash)")
    return meta


def from_bytes(data: bytes, source: str, expect: str | tuple[str, ...] | None = None) -> Artifact:
    """Parse safetensors bytes produced by `to_bytes`, checked as the module docstring says;
    `source` names the file in errors."""
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, OSError) as e:
        raise ArtifactError(f"{source}: not a readable safetensors artifact (truncated or damaged?): "
                            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    meta = _metadata(data, source)
    kind = meta["kind"]
    if expect is not None:
        allowed = (expect,) if isinstance(expect, str) else expect
        if kind not in allowed:
            raise ArtifactError(f"{source}: expected a {' or '.join(allowed)} artifact, got {kind}")
    try:
        model_config = ModelConfig.from_metadata(meta["model_config"])
    except (ConfigError, KeyError, TypeError) as e:
        raise ArtifactError(f"{source}: its model config is not valid ({e})") from None
    art = Artifact(
        kind=kind,
        tensors=tensors,
        model_config=model_config,
        params=meta.get("params", {}),
        parents=meta.get("parents", {}),
        provenance=meta.get("provenance", {}),
        extra=meta.get("extra", {}),
        format_version=meta["format_version"],
        golf_version=meta.get("golf_version", "?"),
    )
    check_tensors(art, source)
    return art


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


# ---------------------------------------------------------------------------------------------------
# The tensors an artifact must hold
# ---------------------------------------------------------------------------------------------------

def _json_type(value: Any) -> str:
    names = {dict: "a JSON object", list: "a list", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def check_finite(tensors: dict[str, torch.Tensor], source: str) -> None:
    """No float tensor holds NaN or infinity."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ArtifactError(f"{source}: tensor {name} holds NaN or infinity")


def _rows_rest(shape: tuple[int, ...]) -> tuple[int, int]:
    """A quantized tensor is stored as rows x rest (a 1-D one as a single row)."""
    rows = shape[0] if len(shape) >= 2 else 1
    numel = 1
    for d in shape:
        numel *= d
    return rows, numel // max(rows, 1)


Layout = dict[str, tuple[tuple[int, ...], tuple[str, ...]]]  # name -> (shape, allowed dtypes)


def _entry_layout(name: str, entry: Any, shape: tuple[int, ...], source: str) -> Layout:
    """The tensors one storage-table entry implies: name -> (shape, allowed dtypes)."""
    where = f"{source}: storage of {name} (extra.tensors)"
    if not isinstance(entry, dict) or entry.get("scheme") not in SCHEMES:
        raise ArtifactError(f"{where} must be an object with a scheme among {', '.join(SCHEMES)}")
    scheme = entry["scheme"]
    if scheme in ("float16", "float32"):
        return {name: (shape, (scheme,))}
    if scheme == "raw":
        return {name: (shape, ())}
    bits, stored = entry.get("bits"), entry.get("shape")
    if type(bits) is not int or not 2 <= bits <= 8:
        raise ArtifactError(f"{where}: bits must be a whole number in [2, 8], got {bits!r}")
    if stored != list(shape):
        raise ArtifactError(f"{where}: shape {stored!r} is not the model's {list(shape)}")
    rows, rest = _rows_rest(shape)
    out = {name + QUANT_SUFFIX: ((rows, rest), ("int8",)),
           name + SCALE_SUFFIX: ((rows,), ("float16",))}
    if "lqer" in entry:
        lq = entry["lqer"]
        if not (isinstance(lq, dict) and type(lq.get("rank")) is int
                and type(lq.get("group")) is int and lq["rank"] > 0 and lq["group"] > 0
                and len(shape) == 2):
            raise ArtifactError(f"{where}: lqer must hold a positive rank and group (2-D only)")
        r, g = lq["rank"], lq["group"]
        out.update({f"{name}.lqer_a": ((rows, r), ("int8",)),
                    f"{name}.lqer_a_scale": ((1,), ("float16",)),
                    f"{name}.lqer_b": ((r, rest), ("int8",)),
                    f"{name}.lqer_b_scale": ((-(-r * rest // g),), ("float16",))})
    return out


def _layout(art: Artifact, source: str) -> Layout:
    """name -> (shape, allowed dtypes; () = any) of every tensor the artifact must hold."""
    shapes = parameter_shapes(art.model_config)
    if art.kind == "checkpoint":
        return {name: (shape, ("float32", "float16", "bfloat16")) for name, shape in shapes.items()}
    table = art.extra.get("tensors")
    if not isinstance(table, dict):
        raise ArtifactError(f"{source}: a quantized artifact needs its storage table "
                            f"(extra.tensors, an object)")
    unknown = sorted(set(table) - set(shapes))
    if unknown:
        raise ArtifactError(f"{source}: extra.tensors stores {unknown[0]}, which is not a "
                            f"parameter of its model config")
    missing = sorted(set(shapes) - set(table))
    if missing:
        raise ArtifactError(f"{source}: extra.tensors does not store {missing[0]}")
    layout = {}
    for name, shape in shapes.items():
        layout.update(_entry_layout(name, table[name], shape, source))
    return layout


def check_tensors(art: Artifact, source: str) -> None:
    """The tensors of `art` are exactly what its kind and model config say (see the module doc)."""
    layout = _layout(art, source)
    extra = sorted(set(art.tensors) - set(layout))
    if extra:
        raise ArtifactError(f"{source}: tensor {extra[0]} is not part of a {art.kind} of its model "
                            f"config")
    for name, (shape, dtypes) in layout.items():
        t = art.tensors.get(name)
        if t is None:
            raise ArtifactError(f"{source}: tensor {name} is missing")
        if dtypes and _dtype(t) not in dtypes:
            raise ArtifactError(f"{source}: tensor {name} is {_dtype(t)}, expected "
                                f"{' or '.join(dtypes)}")
        if tuple(t.shape) != shape:
            raise ArtifactError(f"{source}: tensor {name} has shape {list(t.shape)}, its model "
                                f"config gives {list(shape)}")
    if art.kind == "quantized":
        for name, entry in art.extra["tensors"].items():
            q = art.tensors.get(name + QUANT_SUFFIX)
            if q is not None and q.numel() and int(q.abs().max()) > qmax_for(entry["bits"]):
                raise ArtifactError(f"{source}: codes of {name} exceed int{entry['bits']}")
    check_finite(art.tensors, source)
