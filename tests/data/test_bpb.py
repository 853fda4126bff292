"""Byte accounting: the rule, and exactness against real UTF-8 lengths."""

import io
import math

import numpy as np
import sentencepiece as spm
import torch

from stages.data.bpb import bits_per_byte, build_byte_table, stream_bytes, target_bytes
from stages.data.tokenize import TokenizeParams, train_tokenizer

TRICKY = [
    "Plain prose, with punctuation; and digits 12345.",
    "  leading spaces are not stripped inside a document,\tnor tabs\t\tor runs     of spaces",
    "line one\nline two\n\n\nafter blank lines\r\nwindows ending",
    "unicode: café naïve Ωmega 東京 and emoji 😀🎉 and a rare glyph 𝔘𝔫𝔦",
    "trailing whitespace inside the stream   \n   ",
]


def _lossless_sp(docs):
    proto = train_tokenizer(docs, TokenizeParams(vocab_size=400, character_coverage=0.9995))
    sp = spm.SentencePieceProcessor()
    sp.load_from_serialized_proto(proto)
    return sp


def test_lossless_tokenizer_counts_exact_utf8_bytes(small_docs):
    sp = _lossless_sp(small_docs[:200] + TRICKY * 3)
    table = build_byte_table(sp)
    for text in TRICKY + small_docs[200:230]:
        text = text.strip()
        ids = sp.encode(text)
        assert sp.decode(ids) == text
        stream = np.array([sp.bos_id(), *ids])
        assert stream_bytes(stream, table) == len(text.encode("utf-8")), text


def test_rule_components(small_docs):
    sp = _lossless_sp(small_docs[:200])
    table = build_byte_table(sp)
    bos, pad, eos, unk = sp.bos_id(), sp.pad_id(), sp.eos_id(), sp.unk_id()
    assert all(table.is_boundary[i] and table.base_bytes[i] == 0 for i in (bos, pad, eos, unk))
    byte_ids = [i for i in range(sp.get_piece_size()) if sp.is_byte(i)]
    assert len(byte_ids) == 256 and all(table.base_bytes[i] == 1 for i in byte_ids)
    # A piece with a leading marker: +1 byte except right after a boundary token.
    space_word = next(i for i in range(sp.get_piece_size())
                      if sp.id_to_piece(i).startswith("\u2581") and len(sp.id_to_piece(i)) > 2)
    plain = next(i for i in range(sp.get_piece_size())
                 if not sp.is_byte(i) and not sp.is_control(i) and sp.id_to_piece(i).isalpha())
    word_len = len(sp.id_to_piece(space_word)[1:].encode())
    got = target_bytes(torch.tensor([bos, plain]), torch.tensor([space_word, space_word]), table)
    assert got.tolist() == [word_len, word_len + 1]


def test_normalising_tokenizer_counts_the_normalised_text():
    # The official recipe (NFKC, whitespace collapsed): the table counts the normalised text, which
    # is shorter than the raw bytes on whitespace-heavy text. golf records both; here we check it.
    docs = ["word   after   word\n\nnew  paragraph " * 20, "ﬁne ligature text " * 30]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(docs), model_writer=model, model_type="bpe",
                                   vocab_size=300, byte_fallback=True, add_dummy_prefix=False,
                                   normalization_rule_name="nmt_nfkc", pad_id=0, bos_id=1, eos_id=2,
                                   unk_id=3, hard_vocab_limit=False, minloglevel=2)
    sp = spm.SentencePieceProcessor()
    sp.load_from_serialized_proto(model.getvalue())
    text = "word   after   word\n\nnew  paragraph"
    stream = np.array([sp.bos_id(), *sp.encode(text)])
    normalised = "word after word new paragraph"
    assert stream_bytes(stream, build_byte_table(sp)) == len(normalised)
    assert len(normalised) < len(text.encode())


def test_bits_per_byte_formula():
    assert math.isclose(bits_per_byte(math.log(2) * 10, 5), 2.0)
