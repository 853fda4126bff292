"""`golf inspect`: kind, config, lineage, the layer plan and each tensor's role."""

import json

import pytest
from click.testing import CliRunner

from golfcli.main import cli
from stages import artifacts
from stages.model.gpt import GPT
from stages.tools.describe import describe
from tests.conftest import EVERY_FEATURE, quantized_payload

# What the docs and the baseline say a few tensors are: kind/quantization group/TTT target.
KNOWN_ROLES = {"tok_emb.weight": "table/embedding", "skip_weights": "control/other",
               "blocks.0.attn.c_q.weight": "matrix/attn_q",
               "blocks.1.attn.proj.weight": "matrix/attn_out",
               "blocks.2.mlp.fc.weight": "matrix/mlp_up",
               "blocks.3.mlp.proj.weight": "matrix/mlp_down",
               "blocks.0.mlp.gate.weight": "matrix/other", "bigram.embed.weight": "table/other",
               "blocks.2.attn.ve_lambda": "control/other"}


@pytest.fixture(scope="module")
def every_feature_checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("inspect") / "c.safetensors"
    artifacts.save(artifacts.Artifact("checkpoint", dict(GPT(EVERY_FEATURE).state_dict()),
                                      EVERY_FEATURE, provenance={"weights": "final"}), path)
    return path


def _inspect(path, *extra):
    r = CliRunner().invoke(cli, ["inspect", str(path), *extra])
    assert r.exit_code == 0, r.output
    return r.output


def test_inspect_shows_the_layer_plans(every_feature_checkpoint):
    lines = _inspect(every_feature_checkpoint).splitlines()
    looped = lines.index("layers     looped plan, 6 positions:")
    plain = lines.index("layers     plain plan, 4 positions:")
    # 0 1 2 1 2 3: the first three positions save, the last three add the skips back LIFO.
    assert [line.split()[2] for line in lines[looped + 1:looped + 7]] == ["0", "1", "2", "1", "2",
                                                                          "3"]
    assert "save" in lines[looped + 1] and "+ skip 0 (output of position 2)" in lines[looped + 4]
    assert "two_lane" in lines[looped + 6] and "sequential" in lines[looped + 1]
    assert [line.split()[2] for line in lines[plain + 1:plain + 5]] == ["0", "1", "2", "3"]


def test_inspect_shows_each_tensors_role(every_feature_checkpoint):
    lines = _inspect(every_feature_checkpoint).splitlines()
    rows = {line.split()[0]: line.split()[-1] for line in lines if line.startswith("  ")
            and line.split()[0] in GPT(EVERY_FEATURE).state_dict()}
    assert len(rows) == len(GPT(EVERY_FEATURE).state_dict())  # one row per tensor, each with a role
    assert all(role.count("/") == 1 for role in rows.values())
    for name, role in KNOWN_ROLES.items():
        assert rows[name] == role, name
    d = json.loads(_inspect(every_feature_checkpoint, "--json"))
    assert d["roles"]["blocks.0.attn.c_q.weight"] == {"kind": "matrix", "group": "attn_q"}
    assert d["model_config"]["attn_out_gate"] is False and d["model_config"]["sparse_attn_gate"]


def test_describe_a_quantized_blob(tmp_path):
    from stages.codec.blob import pack

    payload = quantized_payload(dict(GPT(EVERY_FEATURE).state_dict()), EVERY_FEATURE, bits=6)
    (tmp_path / "m.golf").write_bytes(pack(payload, "zstd", 3, layout="shuffle"))
    d = describe(tmp_path / "m.golf")
    assert d["kind"] == "quantized" and d["blob"]["layout"] == "shuffle"
    assert d["blob"]["payload_bytes"] == len(payload)
    assert sum(d["schemes"].values()) == len(GPT(EVERY_FEATURE).state_dict())
    assert set(d["layer_plan"]) == {"looped", "plain"}
