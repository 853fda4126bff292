"""Optional compatibility check against the official sp1024 tokenizer and real FineWeb documents.

These files live outside the repository (the project's shared reference folder); the test is skipped
with a reason when they are absent, as in a user's clone.
"""

import hashlib
import json

import pytest

from stages.data.corpus import load_corpus
from stages.data.tokenize import TokenizeParams, tokenize
from tests.conftest import ROOT

SHARED = ROOT.parent / "shared" / "data"
OFFICIAL = SHARED / "fineweb_1024_bpe.model"
DOCS = SHARED / "fineweb_docs_sample200.jsonl"
OFFICIAL_SHA256 = "4f5e8adb109c66b4886963bc75a7befd73bda36d27fd7102df8e9e66503b0e2a"

pytestmark = pytest.mark.skipif(not (OFFICIAL.is_file() and DOCS.is_file()),
                                reason="shared reference data (official sp1024, FineWeb sample) absent")


def test_official_tokenizer_on_fineweb_documents(tmp_path):
    assert hashlib.sha256(OFFICIAL.read_bytes()).hexdigest() == OFFICIAL_SHA256
    m = tokenize(load_corpus(str(DOCS)), TokenizeParams(vocab_size=1024, val_fraction=0.2),
                 tmp_path / "official", tokenizer_model=OFFICIAL)
    assert m["tokenizer"]["vocab_size"] == 1024 and not m["tokenizer"]["lossless"]
    # NFKC + collapsed whitespace: the table counts the normalised text, a little under the raw bytes.
    ratio = m["val"]["table_bytes"] / m["val"]["text_bytes"]
    assert 0.9 < ratio < 1.0
    assert 2.0 < m["val"]["text_bytes"] / m["val"]["tokens"] < 3.0  # ~2.4 bytes/token on FineWeb


def test_golf_tokenizer_is_exact_on_fineweb_documents(tmp_path):
    m = tokenize(load_corpus(str(DOCS)), TokenizeParams(vocab_size=1024, val_fraction=0.2),
                 tmp_path / "golf")
    assert m["tokenizer"]["lossless"] and m["val"]["table_bytes"] == m["val"]["text_bytes"]
    assert json.loads((tmp_path / "golf/manifest.json").read_text())["val"]["documents"] > 10
