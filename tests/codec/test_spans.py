"""Where the codes lie in a payload: cutting them out and splicing them back, grouped by role."""

import numpy as np
import pytest

from stages import artifacts
from stages.codec import spans
from stages.model.roles import QUANT_GROUPS
from stages.tensorfile import TensorSpan


def test_cut_and_splice_are_inverse(quantized_path):
    payload = quantized_path.read_bytes()
    code = spans.code_spans(payload)
    assert code and all(s.is_code for s in code)
    rest = spans.cut(payload, code)
    assert len(rest) == len(payload) - sum(s.size for s in code)
    assert spans.splice(rest, code, [payload[s.start:s.end] for s in code]) == payload


def test_payloads_that_cannot_be_cut_have_no_code_spans(tiny_run):
    run, _ = tiny_run
    assert spans.code_spans(b"\x00" * 64) == []
    assert spans.code_spans((run / "final.safetensors").read_bytes()) == []  # a float checkpoint
    assert spans.group_symbols((run / "final.safetensors").read_bytes()) == {}


def test_overlapping_spans_are_refused():
    a, b = TensorSpan("a.q", "I8", (4,), 10, 14), TensorSpan("b.q", "I8", (4,), 12, 16)
    with pytest.raises(ValueError, match="overlap"):
        spans.check_disjoint([a, b])
    spans.check_disjoint([a, TensorSpan("c.q", "I8", (4,), 14, 18)])


def test_group_symbols_are_each_groups_codes_in_canonical_order(quantized_path):
    payload = quantized_path.read_bytes()
    q = artifacts.from_bytes(payload, "q")
    groups = spans.group_symbols(payload)
    assert list(groups) == [g for g in QUANT_GROUPS if g in groups]
    start = {s.name.removesuffix(".q"): s.start for s in spans.code_spans(payload)}
    for group, codes in groups.items():
        names = sorted((n for n, e in q.extra["tensors"].items() if e.get("group") == group),
                       key=start.__getitem__)  # by offset in the payload
        expected = np.concatenate([q.tensors[n + ".q"].numpy().ravel() for n in names])
        np.testing.assert_array_equal(codes, expected)
