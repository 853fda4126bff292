import json
import subprocess
import sys

import pytest
import torch

from stages import artifacts
from stages.artifacts import Artifact, ArtifactError
from stages.config import ModelConfig
from tests.conftest import TINY_MODEL

SAVE_SNIPPET = """
import sys, torch
from stages import artifacts
from stages.config import ModelConfig
t = {f"t{i}": torch.arange(12, dtype=torch.float32).reshape(3, 4) * i for i in range(5)}
a = artifacts.Artifact("checkpoint", t, ModelConfig(), params={"a": 1, "b": [1, 2]},
                       parents={"x": "sha256:1", "y": "sha256:2"}, provenance={"k": "v", "z": 3})
artifacts.save(a, sys.argv[1])
"""


def test_identical_content_gives_identical_bytes_across_processes(tmp_path):
    paths = [tmp_path / f"{i}.safetensors" for i in range(3)]
    for p in paths:
        subprocess.run([sys.executable, "-c", SAVE_SNIPPET, str(p)], check=True)
    assert len({p.read_bytes() for p in paths}) == 1


def test_self_description_and_checks(tmp_path):
    cfg = ModelConfig(**TINY_MODEL)
    art = Artifact("checkpoint", {"w": torch.ones(2)}, cfg, params={"train": {"seed": 1}},
                   parents={"data": "sha256:ab"}, provenance={"tokenizer_sha256": "sha256:cd"})
    path = tmp_path / "c.safetensors"
    digest = artifacts.save(art, path)
    assert digest == artifacts.sha256_file(path)
    back = artifacts.load(path, expect="checkpoint")
    assert back.model_config == cfg and back.parents == art.parents
    assert back.params == art.params and back.golf_version == art.golf_version
    assert torch.equal(back.tensors["w"], art.tensors["w"])


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


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), artifacts.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
