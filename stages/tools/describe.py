"""`golf inspect`: what an artifact is, where it came from, what it holds, and how its model runs."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from stages.codec.blob import read_artifact
from stages.model.gpt import roles_for
from stages.model.plan import format_plan, layer_plan
from stages.quant.format import scheme_counts


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
    # By source tensor name: a quantized artifact's `name.q`, `name.scale`... are `name`'s.
    out["roles"] = {name: dataclasses.asdict(role)
                    for name, role in sorted(roles_for(art.model_config).items())}
    cfg = art.model_config
    out["layer_plan"] = {"looped" if cfg.num_loops else "plain": format_plan(layer_plan(cfg, True))}
    if cfg.num_loops:
        out["layer_plan"]["plain"] = format_plan(layer_plan(cfg, False))
    if art.kind == "quantized":
        out["schemes"] = scheme_counts(art)
    return out


def format_description(d: dict) -> list[str]:
    """The human-readable `golf inspect` output of a `describe` dict."""
    lines = [f"{d['file']}  ({d['file_bytes']:,} bytes, {d['sha256'][:19]}…)"]
    if "blob" in d:
        b = d["blob"]
        lines.append(f"blob       v{b['format_version']} {b['codec']}, payload "
                     f"{b['payload_bytes']:,} bytes (x{b['ratio']}), {b['payload_sha256'][:19]}…")
    lines.append(f"kind       {d['kind']} (format v{d['format_version']}, golf {d['golf_version']})")
    lines.append("model      " + ", ".join(f"{k}={v}" for k, v in d["model_config"].items()))
    lines += [f"parent     {role}: {h}" for role, h in d["parents"].items()]
    for k, v in d["provenance"].items():
        text = json.dumps(v) if not isinstance(v, str) else v
        lines.append(f"provenance {k}: {text if len(text) < 90 else text[:87] + '...'}")
    lines += [f"params     {section}: " + json.dumps(values, sort_keys=True)
              for section, values in d["params"].items()]
    if "schemes" in d:
        lines.append(f"schemes    {d['schemes']}")
    for name, plan in d["layer_plan"].items():
        lines.append(f"layers     {name} plan, {len(plan)} positions:")
        lines += [f"  {line}" for line in plan]
    lines.append(f"tensors    {len(d['tensors'])}, {d['total_numel']:,} values "
                 f"(role: kind/quantization group/TTT target)")
    width = max(len(t["name"]) for t in d["tensors"])
    for t in d["tensors"]:
        role = d["roles"].get(t["name"]) or d["roles"].get(t["name"].rsplit(".", 1)[0])
        what = f"{role['kind']}/{role['group']}" if role else ""
        lines.append(f"  {t['name']:<{width}}  {t['dtype']:<8} {str(t['shape']):<14} {what}")
    return lines
