"""Payload layouts before the codec: exact inverses, and what they do to the bytes."""

import pytest
import torch

from stages import artifacts
from stages.artifacts import to_bytes
from stages.compress import BlobError, pack, unpack
from stages.config import ModelConfig, QuantizeParams
from stages.quantize import quantize
from stages.transforms import TRANSFORMS
from tests.conftest import TINY_MODEL


@pytest.fixture(scope="module")
def int6_payload():
    torch.manual_seed(0)
    cfg = ModelConfig(**{**TINY_MODEL, "num_layers": 3})
    from stages.model import GPT

    tensors = {k: torch.randn_like(v) * 0.05 for k, v in GPT(cfg).state_dict().items()}
    ckpt = artifacts.Artifact("checkpoint", tensors, cfg)
    params = QuantizeParams(bits=6, group_bits={"embedding": 8, "mlp_down": 5},
                            keep_float_max_numel=1024)
    return to_bytes(quantize(ckpt, params, parents={}))


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_every_layout_is_an_exact_inverse(int6_payload, name, quantized_path):
    forward, inverse = TRANSFORMS[name]
    for payload in (int6_payload, quantized_path.read_bytes()):
        assert inverse(forward(payload)) == payload
    out = unpack(pack(int6_payload, "zstd", 3, layout=name), "b.golf")
    assert out.payload == int6_payload and out.layout == name


def test_bitpack_spends_the_bit_width(int6_payload):
    from stages.layout import code_spans

    codes = sum(s.size for s in code_spans(int6_payload))
    packed = TRANSFORMS["bitpack"][0](int6_payload)
    saved = len(int6_payload) - len(packed)
    # embedding at 8 bits saves nothing, the int6 and int5 matrices save 2 and 3 bits of 8.
    assert 0.2 * codes < saved < 0.4 * codes


def test_grouped_moves_codes_after_the_rest(int6_payload):
    grouped = TRANSFORMS["grouped"][0](int6_payload)
    assert len(grouped) == len(int6_payload) and grouped != int6_payload
    assert grouped[:64] == int6_payload[:64]  # the header stays first


def test_ans_needs_the_plain_layout(int6_payload):
    with pytest.raises(BlobError, match="ans codes the plain layout"):
        pack(int6_payload, "ans", layout="grouped")
    with pytest.raises(BlobError, match="compress.layout 'zigzag' is not available"):
        pack(int6_payload, "zstd", layout="zigzag")


def test_version_1_blobs_still_read(quantized_path):
    import hashlib
    import struct

    import zstandard

    payload = quantized_path.read_bytes()
    body = zstandard.ZstdCompressor(level=3).compress(payload)
    v1 = b"".join([b"GOLFBLOB", struct.pack("<H", 1), struct.pack("<B", 4), b"zstd",
                   struct.pack("<Q", len(payload)), hashlib.sha256(payload).digest(),
                   struct.pack("<Q", len(body)), body])
    out = unpack(v1, "old.golf")
    assert out.payload == payload and out.version == 1 and out.layout == "plain"


def test_layout_through_the_cli(quantized_path, tmp_path):
    from click.testing import CliRunner

    from golfcli.main import cli

    sizes = {}
    for layout in ("plain", "bitpack"):
        out = tmp_path / f"{layout}.golf"
        r = CliRunner().invoke(cli, ["compress", str(quantized_path), "--out", str(out),
                                     "--layout", layout, "--set", "level=3"])
        assert r.exit_code == 0, r.output
        sizes[layout] = out.stat().st_size
    r = CliRunner().invoke(cli, ["inspect", str(tmp_path / "bitpack.golf"), "--json"])
    assert r.exit_code == 0 and '"layout": "bitpack"' in r.output
