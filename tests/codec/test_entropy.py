"""`golf compress --report`: bytes spent per tensor group against the order-0 entropy bound."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from golfcli.main import cli
from stages import artifacts
from stages.codec.blob import pack
from stages.codec.entropy import format_group_table, group_report, order0_bits
from stages.model.roles import QUANT_GROUPS


def test_order0_bits():
    assert order0_bits(np.array([3, -3] * 50, dtype=np.int8)) == pytest.approx(100.0)
    assert order0_bits(np.array([0, 1, 2, 3] * 25, dtype=np.int8)) == pytest.approx(200.0)
    assert order0_bits(np.zeros(10, dtype=np.int8)) == 0.0
    assert order0_bits(np.zeros(0, dtype=np.int8)) == 0.0


@pytest.mark.parametrize("codec, level", [("ans", 0), ("zstd", 3)])
def test_report_adds_up(quantized_path, codec, level):
    payload = quantized_path.read_bytes()
    r = group_report(payload, codec, level)
    rows = r["groups"].values()
    q = artifacts.from_bytes(payload, "q")
    assert r["codes"]["weights"] == sum(row["weights"] for row in rows) == sum(
        t.numel() for n, t in q.tensors.items() if n.endswith(".q"))
    assert r["codes"]["bytes"] == sum(row["bytes"] for row in rows)
    assert r["codes"]["bound_bytes"] == pytest.approx(sum(row["bound_bytes"] for row in rows),
                                                      abs=1.0)
    assert list(r["groups"]) == [g for g in QUANT_GROUPS if g in r["groups"]]
    if codec == "ans":  # an order-0 coder cannot beat the order-0 bound; zstd, using context, can
        assert all(row["bound_bytes"] <= row["bytes"] for row in rows)
        assert r["codes"]["bytes"] < len(pack(payload, "ans"))  # the records are part of the blob


def test_a_float_checkpoint_has_no_groups(tiny_run):
    run, _ = tiny_run
    r = group_report((run / "final.safetensors").read_bytes(), "zstd", 3)
    assert r["groups"] == {} and r["codes"]["weights"] == 0
    assert "no quantized codes" in format_group_table(r)[0]


def test_cli_report_bare_and_to_a_file(quantized_path, tmp_path):
    runner = CliRunner()
    bare = runner.invoke(cli, ["compress", str(quantized_path), "--out", str(tmp_path / "a.golf"),
                               "--codec", "ans", "--report"])
    assert bare.exit_code == 0, bare.output
    assert "attn_q" in bare.output and "x bound" in bare.output and "/ 16,000,000" in bare.output
    assert not (tmp_path / "-").exists()
    out = tmp_path / "size.json"
    r = runner.invoke(cli, ["compress", str(quantized_path), "--out", str(tmp_path / "b.golf"),
                            "--report", str(out), "--codec", "ans"])
    assert r.exit_code == 0, r.output
    size = json.loads(out.read_text())
    assert size["model_bytes"] == (tmp_path / "b.golf").stat().st_size
    assert size["codec"] == "ans"
    assert size["total_bytes"] == size["model_bytes"] + size["code_bytes"]
    assert size["codes"]["bytes"] == sum(g["bytes"] for g in size["groups"].values())
    assert "mlp_down" in r.output
