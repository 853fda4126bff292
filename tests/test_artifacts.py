"""The artifact schema: byte-identical files for identical content, self-description, refusal of
damaged or foreign files in one line, atomic writes."""

import json
import subprocess
import sys

import pytest
import torch

from stages import artifacts
from stages.artifacts import Artifact, ArtifactError
from stages.files import atomic_path, sha256_bytes, sha256_file, write_json_atomic
from stages.model.config import ModelConfig
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


def test_self_description_and_checks(tmp_path):
    cfg = ModelConfig(**TINY_MODEL)
    art = Artifact("checkpoint", {"w": torch.ones(2)}, cfg, params={"train": {"seed": 1}},
                   parents={"data": "sha256:ab"}, provenance={"tokenizer_sha256": "sha256:cd"})
    path = tmp_path / "c.safetensors"
    digest = artifacts.save(art, path)
    assert digest == sha256_file(path) == sha256_bytes(path.read_bytes())
    back = artifacts.load(path, expect="checkpoint")
    assert back.model_config == cfg and back.parents == art.parents
    assert back.params == art.params and back.golf_version == art.golf_version
    assert torch.equal(back.tensors["w"], art.tensors["w"])
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
    artifacts.save(Artifact("checkpoint", {"w": torch.ones(4)}, ModelConfig(**TINY_MODEL)), path)
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
    artifacts.save(Artifact("checkpoint", {"w": torch.ones(4)}, ModelConfig(**TINY_MODEL)), path)
    bad = {**ModelConfig(**TINY_MODEL).to_metadata(), "num_heads": 3}
    _rewrite_meta(path, model_config=bad)
    with pytest.raises(ArtifactError, match="its model config is not valid"):
        artifacts.load(path)


def test_old_gate_layout_in_an_artifact_loads(tmp_path):
    """Artifact format 1 stores the attention gate as two booleans; a file written that way by
    an earlier golf loads as the new `attn_gate`."""
    path = tmp_path / "c.safetensors"
    artifacts.save(Artifact("checkpoint", {"w": torch.ones(4)}, ModelConfig(**TINY_MODEL)), path)
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
