"""The one safetensors header reader: typed spans with the bits and group golf recorded, and a
HeaderError for anything that does not start with a readable header."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load

from stages import artifacts
from stages.model.config import ModelConfig
from stages.model.gpt import GPT, roles_for
from stages.tensorfile import META_KEY, HeaderError, TensorSpan, qmax_for, read_header
from tests.conftest import TINY_MODEL, quantized_payload

CFG = ModelConfig(**TINY_MODEL)


@pytest.fixture(scope="module")
def mixed_payload() -> bytes:
    """A quantized artifact with three bit widths (embedding 8, mlp_down 4, the rest 6)."""
    torch.manual_seed(0)
    tensors = {k: torch.randn_like(v) * 0.05 for k, v in GPT(CFG).state_dict().items()}
    return quantized_payload(tensors, CFG, bits=6, group_bits={"embedding": 8, "mlp_down": 4})


def test_spans_carry_the_bits_and_group_of_the_storage_table(mixed_payload):
    header = read_header(mixed_payload)
    table = artifacts.from_bytes(mixed_payload, "q").extra["tensors"]
    roles = roles_for(CFG)
    codes = [s for s in header.spans if s.is_code]
    assert {s.name for s in codes} == {n + ".q" for n, e in table.items()
                                       if e["scheme"] == "int_per_row"}
    for s in codes:
        source = s.name.removesuffix(".q")
        assert s.bits == table[source]["bits"] and s.group == table[source]["group"]
        assert s.group == roles[source].group
    assert {s.bits for s in codes} == {8, 6, 4}
    others = [s for s in header.spans if not s.is_code]
    assert others and all(s.bits == 8 and s.group == "other" for s in others)


def test_spans_are_where_the_tensor_bytes_are(mixed_payload):
    header = read_header(mixed_payload)
    tensors = st_load(mixed_payload)
    assert [s.start for s in header.spans] == sorted(s.start for s in header.spans)
    assert all(a.end <= b.start for a, b in zip(header.spans, header.spans[1:], strict=False))
    assert header.end == 8 + int.from_bytes(mixed_payload[:8], "little")
    assert header.data_len == len(mixed_payload)
    for s in header.spans:
        t = tensors[s.name]
        assert mixed_payload[s.start:s.end] == t.numpy().tobytes(), s.name
        assert s.shape == tuple(t.shape) and s.size == t.numel() * t.element_size()
    emb = next(s for s in header.spans if s.name == "tok_emb.weight.q")
    assert emb.matrix_shape == (CFG.vocab_size, CFG.model_dim)
    assert json.loads(header.metadata[META_KEY]) == header.golf()
    assert header.golf()["kind"] == "quantized"


def test_a_header_alone_is_enough_to_read(mixed_payload):
    """A decoder may hold only the header: the spans are checked against the whole length."""
    end = read_header(mixed_payload).end
    assert read_header(mixed_payload[:end], len(mixed_payload)).spans == \
        read_header(mixed_payload).spans
    with pytest.raises(HeaderError, match="lies outside the payload"):
        read_header(mixed_payload[:end])


def _with_header(header: object, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return len(raw).to_bytes(8, "little") + raw + data


@pytest.mark.parametrize("data, message", [
    (b"", "too short"),
    (b"\x05\x00", "too short"),
    ((1000).to_bytes(8, "little") + b"{}", "runs past the data"),
    (_with_header(b"not json at all"), "not JSON"),
    (_with_header(b"\xff\xfe{"), "not JSON"),
    (_with_header([1, 2]), "not a JSON object"),
    (_with_header({"w": {"dtype": "F32", "shape": [1]}}), "has no valid dtype/shape/offsets"),
    (_with_header({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"1234"),
     "lies outside the payload"),
    (_with_header({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"1234"),
     "lies outside the payload"),
])
def test_unreadable_headers_raise_header_error(data, message):
    with pytest.raises(HeaderError, match=message):
        read_header(data)


def test_a_plain_safetensors_file_has_no_golf_document():
    data = _with_header({"w.q": {"dtype": "I8", "shape": [2, 2], "data_offsets": [0, 4]},
                         "__metadata__": {"golf": "{not json"}}, b"\x01\x02\x03\x04")
    header = read_header(data)
    assert header.golf() == {}
    (span,) = header.spans
    assert span.is_code and (span.bits, span.group) == (8, "other")  # nothing recorded: defaults
    assert span.matrix_shape == (2, 2)
    assert not TensorSpan("w.q", "I8", (0,), 5, 5).is_code  # empty
    assert not TensorSpan("w", "I8", (4,), 0, 4).is_code  # not named as codes


@pytest.mark.parametrize("bits, qmax", [(8, 127), (6, 31), (4, 7), (2, 1)])
def test_qmax_is_the_largest_symmetric_code(bits, qmax):
    assert qmax_for(bits) == qmax
    assert np.iinfo(np.int8).min < -qmax_for(bits)  # every code fits one int8 byte
