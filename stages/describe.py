"""`golf inspect`: what an artifact is, where it came from, and what it holds."""

from __future__ import annotations

from pathlib import Path

from stages import artifacts
from stages.artifacts import ArtifactError, sha256_bytes
from stages.compress import is_blob, unpack
from stages.quantize import scheme_counts


def describe(path: str | Path) -> dict:
    """A plain-data description of a checkpoint, quantized artifact or `.golf` blob."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such file")
    data = path.read_bytes()
    out: dict = {"file": str(path), "file_bytes": len(data), "sha256": sha256_bytes(data)}
    if is_blob(data):
        unpacked = unpack(data, str(path))
        out["blob"] = {"format_version": unpacked.version, "codec": unpacked.codec,
                       "layout": unpacked.layout,
                       "payload_bytes": len(unpacked.payload), "payload_sha256": unpacked.sha256,
                       "ratio": round(len(unpacked.payload) / len(data), 4)}
        data = unpacked.payload
    art = artifacts.from_bytes(data, str(path))
    meta = art.metadata()
    out.update({k: meta[k] for k in ("kind", "format_version", "golf_version", "model_config",
                                     "params", "parents", "provenance")})
    out["tensors"] = [{"name": k, "dtype": str(v.dtype).removeprefix("torch."),
                       "shape": list(v.shape), "numel": v.numel()}
                      for k, v in sorted(art.tensors.items())]
    out["total_numel"] = sum(t["numel"] for t in out["tensors"])
    if art.kind == "quantized":
        out["schemes"] = scheme_counts(art)
    return out
