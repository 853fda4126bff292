"""Payload layouts before the codec: exact inverses, and what they do to the bytes."""

import pytest
import torch
from click.testing import CliRunner

from golfcli.main import cli
from stages.codec.blob import pack, unpack
from stages.codec.layouts import LAYOUTS
from stages.codec.spans import code_spans
from stages.model.config import ModelConfig
from stages.model.gpt import GPT
from tests.conftest import TINY_MODEL, quantized_payload


@pytest.fixture(scope="module")
def int6_payload():
    torch.manual_seed(0)
    cfg = ModelConfig(**{**TINY_MODEL, "num_layers": 3})
    tensors = {k: torch.randn_like(v) * 0.05 for k, v in GPT(cfg).state_dict().items()}
    return quantized_payload(tensors, cfg, bits=6, group_bits={"embedding": 8, "mlp_down": 5})


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_every_layout_is_an_exact_inverse(int6_payload, name, quantized_path):
    forward, inverse = LAYOUTS[name]
    for payload in (int6_payload, quantized_path.read_bytes()):
        assert inverse(forward(payload)) == payload
    out = unpack(pack(int6_payload, "zstd", 3, layout=name), "b.golf")
    assert out.payload == int6_payload and out.layout == name


def test_bitpack_spends_the_bit_width(int6_payload):
    codes = sum(s.size for s in code_spans(int6_payload))
    packed = LAYOUTS["bitpack"][0](int6_payload)
    saved = len(int6_payload) - len(packed)
    # embedding at 8 bits saves nothing, the int6 and int5 matrices save 2 and 3 bits of 8.
    assert 0.2 * codes < saved < 0.4 * codes


def test_grouped_moves_codes_after_the_rest(int6_payload):
    grouped = LAYOUTS["grouped"][0](int6_payload)
    assert len(grouped) == len(int6_payload) and grouped != int6_payload
    assert grouped[:64] == int6_payload[:64]  # the header stays first


def test_layout_through_the_cli(quantized_path, tmp_path):
    sizes = {}
    for layout in ("plain", "bitpack"):
        out = tmp_path / f"{layout}.golf"
        r = CliRunner().invoke(cli, ["compress", str(quantized_path), "--out", str(out),
                                     "--layout", layout, "--set", "level=3"])
        assert r.exit_code == 0, r.output
        sizes[layout] = out.stat().st_size
    r = CliRunner().invoke(cli, ["inspect", str(tmp_path / "bitpack.golf"), "--json"])
    assert r.exit_code == 0 and '"layout": "bitpack"' in r.output
