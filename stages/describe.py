"""`golf inspect`: what an artifact is, where it came from, and what it holds."""

from __future__ import annotations

from pathlib import Path

from stages.compress import read_artifact
from stages.quantize import scheme_counts


def describe(path: str | Path) -> dict:
    """A plain-data description of a checkpoint, quantized artifact or `.golf` blob."""
    read = read_artifact(path)
    art, blob = read.artifact, read.blob
    out: dict = {"file": str(path), "file_bytes": read.file_bytes, "sha256": read.file_sha256}
    if blob:
        out["blob"] = {"format_version": blob.version, "codec": blob.codec, "layout": blob.layout,
                       "payload_bytes": len(blob.payload), "payload_sha256": blob.sha256,
                       "ratio": round(len(blob.payload) / read.file_bytes, 4)}
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
