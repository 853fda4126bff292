"""Document-isolated attention (train.doc_attention): a document's logits do not depend on the
document before it in the row; with one document per row it is plain causal attention; eval mode
and models without the switch are unchanged; the varlen kernel agrees with the masked SDPA path."""

import pytest
import torch
import torch.nn.functional as F

from stages.data.shards import BOS_ID
from stages.model import attention
from stages.model.attention import (
    Documents,
    causal_attention,
    document_attention,
    varlen_cu_seqlens,
)
from stages.model.gpt import build_model
from tests.conftest import BASE, EVERY_FEATURE, randomise

T = 32
SECOND = 13  # where the second document of each row starts


def _rows(seed: int = 0) -> torch.Tensor:
    """(2, T) ids with no BOS, then a BOS at position 0 of row 0 and at SECOND of both rows."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(2, BASE.vocab_size, (2, T), generator=g)
    idx[0, 0] = BOS_ID
    idx[:, SECOND] = BOS_ID
    return idx


def _model(cfg, doc_attention: bool):
    model = randomise(build_model(cfg))
    model.set_document_attention(doc_attention)
    return model.train()


def test_documents_mark_bos_and_row_starts():
    idx = _rows()
    docs = Documents.of(idx, BOS_ID)
    assert docs.doc_id[0, :SECOND].eq(1).all() and docs.doc_id[0, SECOND:].eq(2).all()
    assert docs.doc_id[1, :SECOND].eq(1).all() and docs.doc_id[1, SECOND:].eq(2).all()
    assert docs.cu_seqlens is None  # built only where the varlen kernel runs
    cu = varlen_cu_seqlens((idx == BOS_ID) | (torch.arange(T) == 0), bucket=8)
    assert cu.dtype == torch.int32
    assert cu.tolist() == [0, SECOND, T, T + SECOND] + [2 * T] * 4  # padded with empty documents
    mask = docs.mask()  # (B, 1, T, T)
    assert mask.shape == (2, 1, T, T)
    assert mask[0, 0, SECOND, SECOND] and not mask[0, 0, SECOND, SECOND - 1]
    assert not mask[0, 0, 3, 4] and mask[0, 0, 4, 3]


@pytest.mark.parametrize("cfg", [BASE, EVERY_FEATURE], ids=["base", "every-feature"])
def test_a_document_does_not_see_the_one_before_it(cfg):
    model = _model(cfg, doc_attention=True)
    idx = _rows()
    other = idx.clone()
    other[:, 1:SECOND] = _rows(seed=1)[:, 1:SECOND]  # a different first document, same lengths
    with torch.no_grad():
        a, b = model(idx), model(other)
    assert (a[:, SECOND:] - b[:, SECOND:]).abs().max() < 1e-5
    assert (a[:, 1:SECOND] - b[:, 1:SECOND]).abs().max() > 1e-2
    leaky = _model(cfg, doc_attention=False)  # causal across documents: the change shows
    with torch.no_grad():
        assert (leaky(idx)[:, SECOND:] - leaky(other)[:, SECOND:]).abs().max() > 1e-2


def test_one_document_per_row_is_plain_causal_attention():
    idx = _rows()
    idx[:, SECOND] = 5  # no BOS after position 0
    isolated, plain = _model(BASE, True), _model(BASE, False)
    with torch.no_grad():
        assert torch.allclose(isolated(idx), plain(idx), atol=1e-5)


def test_eval_mode_attends_across_documents():
    idx = _rows()
    isolated, plain = _model(BASE, True).eval(), _model(BASE, False).eval()
    with torch.no_grad():
        assert torch.equal(isolated(idx), plain(idx))


def _qkv(device, dtype, kv_heads=2):
    g = torch.Generator(device=device).manual_seed(0)
    shapes = ((3, 256, 8, 64), (3, 256, kv_heads, 64), (3, 256, kv_heads, 64))
    return tuple(torch.randn(s, generator=g, device=device, dtype=dtype) for s in shapes)


def _docs(device) -> Documents:
    idx = torch.full((3, 256), 7, device=device)
    idx[0, [0, 40, 41, 200]] = BOS_ID  # a one-token document at 40
    idx[1, 0] = BOS_ID  # one document
    idx[2, [100, 255]] = BOS_ID  # starts inside a document; a document on the last position
    return Documents.of(idx, BOS_ID)


def test_masked_sdpa_is_causal_attention_per_document():
    q, k, v = _qkv("cpu", torch.float32)
    docs = _docs("cpu")
    out = document_attention(q, k, v, docs)
    for b, bounds in enumerate([(0, 40, 41, 200, 256), (0, 256), (0, 100, 255, 256)]):
        for lo, hi in zip(bounds, bounds[1:]):
            alone = causal_attention(q[b:b + 1, lo:hi], k[b:b + 1, lo:hi], v[b:b + 1, lo:hi])
            assert torch.allclose(out[b:b + 1, lo:hi], alone, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.parametrize("kv_heads", [8, 2], ids=["MHA", "GQA"])
def test_flash_varlen_matches_the_masked_sdpa_path(kv_heads, monkeypatch):
    if attention._flash_attn_varlen is None:
        pytest.skip("no flash-attn varlen kernel (flash_attn_interface or flash_attn)")
    q, k, v = _qkv("cuda", torch.bfloat16, kv_heads)
    docs = _docs("cuda")
    assert docs.cu_seqlens is not None and attention.attention_backend(q) == "flash_attn"
    varlen = document_attention(q, k, v, docs)
    assert varlen.shape == q.shape and varlen.dtype == torch.bfloat16
    monkeypatch.setattr(attention, "_flash_attn_varlen", None)  # the masked SDPA path
    masked = document_attention(q, k, v, docs)
    assert (varlen.float() - masked.float()).abs().max() < 2e-2
    reference = document_attention(q.float(), k.float(), v.float(), docs)
    assert (varlen.float() - reference).abs().max() < 2e-2


def _reference_varlen(q, k, v, *, cu_seqlens_q, cu_seqlens_k, max_seqlen_q, max_seqlen_k, causal):
    """flash-attn's varlen contract in plain PyTorch: (N, heads, D) packed, one causal attention
    per [cu[i], cu[i+1]) segment (empty ones included)."""
    assert torch.equal(cu_seqlens_q, cu_seqlens_k) and causal and max_seqlen_q == max_seqlen_k
    out = torch.zeros_like(q)
    for lo, hi in zip(cu_seqlens_q.tolist(), cu_seqlens_q.tolist()[1:]):
        assert hi - lo <= max_seqlen_q
        if hi > lo:  # (heads, n, D) per segment
            seg = [t[lo:hi].transpose(0, 1) for t in (q, k, v)]
            y = F.scaled_dot_product_attention(*seg, is_causal=True, enable_gqa=True)
            out[lo:hi] = y.transpose(0, 1)
    return out


def test_the_varlen_call_packs_rows_as_the_kernel_expects(monkeypatch):
    """The flattening, offsets and padding of the CUDA path, run on the CPU through a reference
    of the kernel's contract: it must equal the masked SDPA path."""
    q, k, v = _qkv("cpu", torch.float32)
    starts = _docs("cpu").doc_id.diff(dim=1, prepend=torch.zeros(3, 1)) != 0  # (B, T)
    docs = Documents(_docs("cpu").doc_id, varlen_cu_seqlens(starts))
    masked = document_attention(q, k, v, docs)
    monkeypatch.setattr(attention, "_flash_attn_varlen", _reference_varlen)
    monkeypatch.setattr(attention, "attention_backend", lambda q: "flash_attn")
    assert torch.allclose(document_attention(q, k, v, docs), masked, atol=1e-5)
