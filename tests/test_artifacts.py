"""The artifact schema: byte-identical files for identical content, self-description, refusal of
damaged or foreign files in one line, atomic writes."""

import json
import os
import stat
import subprocess
import sys

import pytest
import torch

from stages import artifacts
from stages.artifacts import Artifact, ArtifactError
from stages.files import atomic_path, sha256_bytes, sha256_file, write_json_atomic
from stages.model.config import ModelConfig
from stages.model.gpt import GPT
from tests.conftest import ROOT, TINY_MODEL

SAVE_SNIPPET = """
import sys, torch
from stages import artifacts
from stages.model.config import ModelConfig
t = {f"t{i}": torch.arange(12, dtype=torch.float32).reshape(3, 4) * i for i in range(5)}
a = artifacts.Artifact("checkpoint", t, ModelConfig(vocab_size=64), params={"a": 1, "b": [1, 2]},
                       parents={"x": "sha256:1", "y": "sha256:2"}, provenance={"k": "v", "z": 3})
artifacts.save(a, sys.argv[1])
"""


def test_identical_content_gives_identical_bytes_across_processes(tmp_path):
    paths = [tmp_path / f"{i}.safetensors" for i in range(3)]
    for p in paths:
        subprocess.run([sys.executable, "-c", SAVE_SNIPPET, str(p)], check=True, cwd=ROOT)
    assert len({p.read_bytes() for p in paths}) == 1


def _weights(cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """A full set of tensors for `cfg` (an artifact must hold exactly its model's tensors)."""
    torch.manual_seed(0)
    return dict(GPT(cfg).state_dict())


def test_self_description_and_checks(tmp_path):
    cfg = ModelConfig(**TINY_MODEL)
    art = Artifact("checkpoint", _weights(cfg), cfg, params={"train": {"seed": 1}},
                   parents={"data": "sha256:ab"}, provenance={"tokenizer_sha256": "sha256:cd"})
    path = tmp_path / "c.safetensors"
    digest = artifacts.save(art, path)
    assert digest == sha256_file(path) == sha256_bytes(path.read_bytes())
    back = artifacts.load(path, expect="checkpoint")
    assert back.model_config == cfg and back.parents == art.parents
    assert back.params == art.params and back.golf_version == art.golf_version
    assert all(torch.equal(back.tensors[k], v) for k, v in art.tensors.items())
    again, again_digest = artifacts.load_with_hash(path, expect=("checkpoint", "quantized"))
    assert again_digest == digest and again.provenance == art.provenance


def _rewrite_meta(path, **changes):
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    meta = json.loads(header["__metadata__"]["golf"])
    meta.update(changes)
    header["__metadata__"]["golf"] = json.dumps(meta)
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    path.write_bytes(len(new).to_bytes(8, "little") + new + raw[8 + n:])


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(p.read_bytes()[:-3]), "not a readable safetensors artifact"),
    (lambda p: p.write_bytes(b""), "not a readable safetensors artifact"),
    (lambda p: _rewrite_meta(p, format_version=99), "format version 99 is not supported"),
    (lambda p: _rewrite_meta(p, kind="tokenizer"), "unknown artifact kind 'tokenizer'"),
])
def test_damaged_or_foreign_artifacts(tmp_path, damage, message):
    path = tmp_path / "c.safetensors"
    cfg = ModelConfig(**TINY_MODEL)
    artifacts.save(Artifact("checkpoint", _weights(cfg), cfg), path)
    damage(path)
    with pytest.raises(ArtifactError) as e:
        artifacts.load(path)
    assert message in str(e.value) and str(e.value).startswith(str(path))
    assert "\n" not in str(e.value)


def test_plain_safetensors_is_not_a_golf_artifact(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.ones(2)}, path)
    with pytest.raises(ArtifactError, match="without golf metadata"):
        artifacts.load(path)


def test_a_config_that_no_longer_validates_is_refused(tmp_path):
    path = tmp_path / "c.safetensors"
    cfg = ModelConfig(**TINY_MODEL)
    artifacts.save(Artifact("checkpoint", _weights(cfg), cfg), path)
    bad = {**ModelConfig(**TINY_MODEL).to_metadata(), "num_heads": 3}
    _rewrite_meta(path, model_config=bad)
    with pytest.raises(ArtifactError, match="its model config is not valid"):
        artifacts.load(path)


def test_old_gate_layout_in_an_artifact_loads(tmp_path):
    """Artifact format 1 stores the attention gate as two booleans; a file written that way by
    an earlier golf loads as the new `attn_gate`."""
    path = tmp_path / "c.safetensors"
    cfg = ModelConfig(**TINY_MODEL)
    artifacts.save(Artifact("checkpoint", _weights(cfg), cfg), path)
    gated = ModelConfig(**TINY_MODEL, attn_gate="sparse", attn_gate_scale=0.25)
    artifacts.save(Artifact("checkpoint", _weights(gated), gated), path)
    old = {**ModelConfig(**TINY_MODEL).to_metadata(), "sparse_attn_gate": True,
           "sparse_attn_gate_scale": 0.25}
    _rewrite_meta(path, model_config=old)
    cfg = artifacts.load(path).model_config
    assert (cfg.attn_gate, cfg.attn_gate_scale) == ("sparse", 0.25)


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"  # the earlier file survives a failed rewrite
    write_json_atomic(tmp_path / "sub" / "m.json", {"b": 1, "a": [1]})
    text = (tmp_path / "sub" / "m.json").read_text()
    assert json.loads(text) == {"a": [1], "b": 1} and text.index('"a"') < text.index('"b"')


def test_a_killed_writers_temporaries_go_with_the_next_write(tmp_path):
    """P1: an unlocked `.NAME.*.tmp` (its writer was killed) is removed by the next write to NAME;
    one a live writer holds is left alone."""
    from stages.files import lock

    target = tmp_path / "q.safetensors"
    stale = tmp_path / ".q.safetensors.abc123.tmp"
    stale.write_bytes(b"half")
    held = tmp_path / ".q.safetensors.def456.tmp"
    held.write_bytes(b"being written")
    fd = lock(held)
    try:
        write_json_atomic(target, {"a": 1})
        assert sorted(p.name for p in tmp_path.iterdir()) == [held.name, target.name]
    finally:
        os.close(fd)
    write_json_atomic(target, {"a": 2})
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755),
                                                         (0o077, 0o600, 0o700)])
def test_outputs_get_the_permissions_the_umask_gives(tmp_path, umask, file_mode, dir_mode):
    """S8: not mkstemp's 0600 and mkdtemp's 0700 whatever the umask."""
    from stages.files import atomic_dir

    old = os.umask(umask)
    try:
        write_json_atomic(tmp_path / "m.json", {})
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "x").write_text("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == file_mode
    assert stat.S_IMODE((tmp_path / "folder").stat().st_mode) == dir_mode


def test_json_golf_writes_is_always_json(tmp_path):
    """S1: NaN and infinity are not JSON; writing them is an error naming the file."""
    from stages.errors import GolfError

    with pytest.raises(GolfError, match="m.json: refusing to write NaN or infinity"):
        write_json_atomic(tmp_path / "m.json", {"val_loss": float("nan")})
    assert list(tmp_path.iterdir()) == []


def test_metadata_is_checked_key_by_key(tmp_path):
    """U1, T3: a version given as text, and keys of the wrong type, are named."""
    path = tmp_path / "c.safetensors"
    cfg = ModelConfig(**TINY_MODEL)
    artifacts.save(Artifact("checkpoint", _weights(cfg), cfg), path)
    _rewrite_meta(path, format_version="1")
    with pytest.raises(ArtifactError, match=r"format_version must be a whole number, got '1' \(a "
                                            r"string\); this golf reads version 1"):
        artifacts.load(path)
    _rewrite_meta(path, format_version=1, provenance=["x"])
    with pytest.raises(ArtifactError, match="golf metadata 'provenance' must be a JSON object, "
                                            "got a list"):
        artifacts.load(path)


@pytest.mark.parametrize("change, message", [
    (lambda t: t.pop("tok_emb.weight"), "tensor tok_emb.weight is missing"),
    (lambda t: t.update({"tok_emb.weight": torch.zeros(3, 64)}),
     r"tensor tok_emb.weight has shape \[3, 64\], its model config gives \[400, 64\]"),
    (lambda t: t.update({"tok_emb.weight": t["tok_emb.weight"].to(torch.int32)}),
     "tensor tok_emb.weight is int32, expected float32 or float16 or bfloat16"),
    (lambda t: t.update({"lm_head.weight": torch.zeros(2)}), "tensor lm_head.weight is not part"),
    (lambda t: t["tok_emb.weight"].view(-1).__setitem__(0, float("inf")),
     "tensor tok_emb.weight holds NaN or infinity"),
], ids=["missing", "shape", "dtype", "extra", "infinite"])
def test_tensors_are_checked_against_the_model_config(tmp_path, change, message):
    """T2, S2, S1: before any tensor is used, and in one line."""
    from safetensors.torch import save as st_save

    cfg = ModelConfig(**TINY_MODEL)
    tensors = _weights(cfg)
    change(tensors)
    meta = Artifact("checkpoint", {}, cfg).metadata()
    path = tmp_path / "c.safetensors"
    path.write_bytes(st_save(tensors, metadata={"golf": json.dumps(meta)}))
    with pytest.raises(ArtifactError, match=message):
        artifacts.load(path)
    with pytest.raises(ArtifactError, match="holds NaN or infinity"):
        artifacts.to_bytes(Artifact("checkpoint", {"w": torch.tensor([float("nan")])}, cfg))
