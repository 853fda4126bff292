"""`golf import`: a `final_model.pt` of the public baseline `train_gpt.py` -> a golf checkpoint.

The baseline saves `base_model.state_dict()` with `torch.save`: a plain pickle of tensors whose
names are the ones golf uses (stages/model/gpt.py). The file is read with `torch.load` in its
`weights_only` mode only, so a pickle that would run code or build arbitrary objects is refused
rather than executed.

The architecture is read from the tensor shapes. What the weights cannot tell (logit_softcap,
rope_base, qk_gain_init, tied_embed_init_std) comes from the model values the caller passes; a shape
value among them must agree with the weights, because a silent override would describe a model the
tensors are not (the CLI passes only the shape values given explicitly with --set).
"""

from __future__ import annotations

import io
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

import torch

from stages.artifacts import Artifact
from stages.errors import GolfError
from stages.files import sha256_bytes
from stages.model.config import ModelConfig
from stages.model.gpt import GPT, build_model
from stages.params import ConfigError, build

SOURCE_FORMAT = "parameter-golf train_gpt.py state_dict"
# torch.compile wraps the model as `_orig_mod`, DDP as `module`; a state dict saved from either
# wrapper carries the prefix on every name.
WRAPPER_PREFIXES = ("_orig_mod.", "module.")
SHAPE_KEYS = ("vocab_size", "num_layers", "model_dim", "num_heads", "num_kv_heads", "mlp_mult")
_BLOCK_INDEX = re.compile(r"^blocks\.(\d+)\.")


class BaselineImportError(GolfError):
    """A source checkpoint that is unsafe, unreadable or not the baseline architecture."""


def load_baseline_file(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """Read a baseline `final_model.pt` safely.

    Args:
        path: File written by `torch.save(model.state_dict(), ...)`.

    Returns:
        The state dict and the SHA-256 (`sha256:<hex>`) of the bytes it was loaded from.

    Raises:
        BaselineImportError: No such file, not a PyTorch checkpoint, a pickle holding anything but
            tensors (never unpickled), or not a flat mapping of names to tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise BaselineImportError(f"{path}: no such file")
    data = path.read_bytes()  # hash and load the same bytes, so the recorded hash is what was read
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4": the error below says enough
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise BaselineImportError(f"{path}: {_unpickler_reason(str(e))}; golf loads weights only "
                                  f"and never runs arbitrary pickles") from None
    except Exception as e:  # torch raises many types for foreign or damaged bytes; same meaning
        text = str(e).strip()
        first = text.splitlines()[0].split(". ")[0] if text else type(e).__name__
        raise BaselineImportError(f"{path}: not a readable PyTorch checkpoint (damaged or another "
                                  f"format?): {first}") from None
    return _check_state_dict(obj, str(path)), sha256_bytes(data)


def import_baseline(state_dict: dict[str, torch.Tensor], model_values: dict[str, Any], *,
                    source: str, source_sha256: str) -> Artifact:
    """Turn a baseline state dict into a golf `checkpoint` artifact of the same architecture.

    Args:
        state_dict: Tensors by name, as `load_baseline_file` returns them (any float dtype; a
            `_orig_mod.` or `module.` prefix is dropped).
        model_values: The model section of the params as given (file and overrides, before
            defaults): supplies the values the weights cannot tell; any shape value in it must
            match the weights.
        source: Where the state dict came from, recorded in the provenance and used in errors.
        source_sha256: Hash of the source file, recorded as the `source` parent.

    Returns:
        A checkpoint with fp32 tensors, the inferred `ModelConfig` and the import provenance.

    Raises:
        BaselineImportError: An untied `lm_head`, missing or unexpected tensors, shapes that do not
            fit one baseline model, or shape values in `model_values` that contradict the weights.
        ConfigError: A non-shape value in `model_values` of the wrong type or range.
    """
    tensors = _strip_prefixes(state_dict, source)
    if "lm_head.weight" in tensors:
        raise BaselineImportError(f"{source}: has lm_head.weight, an untied output head; golf's "
                                  f"model ties it to tok_emb (train with TIE_EMBEDDINGS=1)")
    inferred = _infer_shapes(tensors, source)
    try:
        build(ModelConfig, inferred)  # shapes the model code cannot run, e.g. odd head_dim
    except ConfigError as e:
        raise BaselineImportError(f"{source}: the weights imply an unsupported model: "
                                  f"{e}") from None
    _check_agreement(model_values, inferred)
    cfg = build(ModelConfig, {**model_values, **inferred})
    _check_names_and_shapes(tensors, cfg, source)
    tensors = {k: v.detach().to(torch.float32).contiguous() for k, v in sorted(tensors.items())}
    try:
        build_model(cfg, tensors)  # the strict load any later stage will do, done once here
    except RuntimeError as e:
        raise BaselineImportError(f"{source}: does not load into the baseline GPT: "
                                  f"{str(e).splitlines()[0]}") from None
    return Artifact("checkpoint", tensors, cfg, params={"model": cfg.to_metadata()},
                    parents={"source": source_sha256},
                    provenance={"imported_from": source, "source_sha256": source_sha256,
                                "source_format": SOURCE_FORMAT})


def _unpickler_reason(message: str) -> str:
    """One line from torch's multi-paragraph weights_only error: which global it refused, if any."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", message)
    if found:  # an object beyond tensors: the case weights_only exists for
        return f"refused: the pickle references {found.group(1)}, not only tensors"
    found = re.search(r"WeightsUnpickler error:\s*([^\n]+)", message)
    detail = found.group(1).strip() if found else "weights_only load failed"
    return f"not a readable PyTorch checkpoint ({detail})"


def _check_state_dict(obj: Any, source: str) -> dict[str, torch.Tensor]:
    """`obj` if it is a flat mapping of names to tensors (a training checkpoint nests one)."""
    if not isinstance(obj, dict):
        raise BaselineImportError(f"{source}: not a state dict of tensors (the file holds a "
                                  f"{type(obj).__name__}, not a dict)")
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise BaselineImportError(f"{source}: not a state dict of tensors ({key!r} is "
                                      f"{type(value).__name__}, not a tensor)")
    return obj


def _strip_prefixes(state_dict: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """The tensors under their bare names; anything but a float tensor is refused here."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        clean = name
        while clean.startswith(WRAPPER_PREFIXES):  # both wrappers may be stacked
            clean = clean.split(".", 1)[1]
        if clean in out:
            raise BaselineImportError(f"{source}: {name} duplicates {clean} once wrapper prefixes "
                                      f"are removed")
        if not tensor.is_floating_point():
            dtype = str(tensor.dtype).removeprefix("torch.")
            raise BaselineImportError(f"{source}: {clean} is {dtype}, expected a float tensor")
        out[clean] = tensor
    return out


def _shape(tensors: dict[str, torch.Tensor], name: str, ndim: int, source: str) -> tuple[int, ...]:
    if name not in tensors:
        raise BaselineImportError(f"{source}: missing tensor {name}, needed to infer the model")
    shape = tuple(tensors[name].shape)
    if len(shape) != ndim:
        raise BaselineImportError(f"{source}: {name} has shape {list(shape)}, expected {ndim} dims")
    return shape


def _divide(a: int, b: int, what: str, source: str) -> int:
    if b == 0 or a % b:
        raise BaselineImportError(f"{source}: {what}: {a} is not a multiple of {b}")
    return a // b


def _infer_shapes(tensors: dict[str, torch.Tensor], source: str) -> dict[str, int]:
    """The shape values of `ModelConfig`, read from the embedding and block 0."""
    vocab_size, model_dim = _shape(tensors, "tok_emb.weight", 2, source)
    layers = {int(m.group(1)) for name in tensors if (m := _BLOCK_INDEX.match(name))}
    if not layers:
        raise BaselineImportError(f"{source}: no blocks.N.* tensors; not a baseline GPT state dict")
    (num_heads,) = _shape(tensors, "blocks.0.attn.q_gain", 1, source)
    head_dim = _divide(model_dim, num_heads, "model_dim over q_gain's heads", source)
    kv_rows, _ = _shape(tensors, "blocks.0.attn.c_k.weight", 2, source)
    fc_rows, _ = _shape(tensors, "blocks.0.mlp.fc.weight", 2, source)
    return {
        "vocab_size": vocab_size,
        "num_layers": max(layers) + 1,  # a gap in the indices shows up as missing tensors later
        "model_dim": model_dim,
        "num_heads": num_heads,
        "num_kv_heads": _divide(kv_rows, head_dim, "c_k rows over head_dim", source),
        "mlp_mult": _divide(fc_rows, model_dim, "mlp.fc rows over model_dim", source),
    }


def _check_agreement(model_values: dict[str, Any], inferred: dict[str, int]) -> None:
    """Shape values given in the params must be the weights' own; name every one that is not."""
    wrong = [k for k in SHAPE_KEYS if k in model_values and model_values[k] != inferred[k]]
    if wrong:
        given = ", ".join(f"model.{k}={model_values[k]}" for k in wrong)
        actual = ", ".join(f"{k}={inferred[k]}" for k in wrong)
        raise BaselineImportError(f"{given} in the params contradict the weights ({actual}); "
                                  f"remove them or set them to the weights' values")


def _few(names: list[str], limit: int = 4) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _check_names_and_shapes(tensors: dict[str, torch.Tensor], cfg: ModelConfig,
                            source: str) -> None:
    """Exactly the tensors of `GPT(cfg)`, each of its shape, or a one-line error naming a few."""
    with torch.device("meta"):  # shapes only: no memory, no init
        expected = {k: tuple(v.shape) for k, v in GPT(cfg).state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        parts = ([f"missing {_few(missing)}"] if missing else []) + \
                ([f"unexpected {_few(unexpected)}"] if unexpected else [])
        raise BaselineImportError(f"{source}: tensors do not match a {cfg.num_layers}-layer "
                                  f"baseline GPT: {'; '.join(parts)}")
    wrong = [f"{k} {list(tensors[k].shape)} (expected {list(s)})"
             for k, s in sorted(expected.items()) if tuple(tensors[k].shape) != s]
    if wrong:
        raise BaselineImportError(f"{source}: shape mismatch: {_few(wrong, 3)}")
