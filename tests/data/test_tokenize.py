import hashlib
import json

import numpy as np
import pytest

from stages.data.corpus import Corpus
from stages.data.shards import BOS_ID, read_shard, shard_paths
from stages.data.tokenize import TokenizeError, TokenizeParams, is_validation, tokenize


def test_manifest_split_and_exact_bytes(data_dir, small_docs):
    m = json.loads((data_dir / "manifest.json").read_text())
    assert m["tokenizer"]["vocab_size"] == 400 and m["tokenizer"]["lossless"]
    assert m["val"]["table_bytes"] == m["val"]["text_bytes"]
    val_docs = [d for d in small_docs if is_validation(d, 0.1)]
    train_docs = [d for d in small_docs if not is_validation(d, 0.1)]
    assert m["val"]["documents"] == len(val_docs) > 0
    assert m["train"]["documents"] == len(train_docs)
    assert not set(val_docs) & set(train_docs)
    assert m["val"]["text_bytes"] == sum(len(d.encode()) for d in val_docs)
    for split in ("train", "val"):
        shards = shard_paths(data_dir, split)
        assert [s["file"] for s in m[split]["shards"]] == [p.name for p in shards]
        for entry, path in zip(m[split]["shards"], shards, strict=True):
            assert entry["sha256"] == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        tokens = np.concatenate([read_shard(p) for p in shards])
        assert tokens.size == m[split]["tokens"]
        assert tokens[0] == BOS_ID and (tokens == BOS_ID).sum() == m[split]["documents"]


def test_split_depends_only_on_text():
    docs = [f"document number {i} " * 5 for i in range(200)]
    first = {d for d in docs if is_validation(d, 0.2)}
    assert first == {d for d in reversed(docs) if is_validation(d, 0.2)}
    assert 10 < len(first) < 70


def test_small_shards_and_reused_tokenizer(tmp_path, data_dir, small_docs):
    out = tmp_path / "again"
    m = tokenize(Corpus("small", small_docs), TokenizeParams(vocab_size=400, shard_tokens=5000), out,
                 tokenizer_model=data_dir / "tokenizer.model")
    assert len(m["train"]["shards"]) > 1 and not m["tokenizer"]["trained_here"]
    assert (out / "tokenizer.model").read_bytes() == (data_dir / "tokenizer.model").read_bytes()
    base = json.loads((data_dir / "manifest.json").read_text())
    assert m["train"]["tokens"] == base["train"]["tokens"]


def test_vocab_too_large_is_a_clear_error_and_writes_nothing(tmp_path):
    out = tmp_path / "tok"
    docs = [f"tiny corpus {i}" for i in range(40)]
    with pytest.raises(TokenizeError) as e:
        tokenize(Corpus("tiny", docs), TokenizeParams(vocab_size=4000), out)
    assert "tokenize.vocab_size=4000 is larger than this corpus supports" in str(e.value)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_existing_output_survives_a_failed_run(tmp_path, small_docs):
    out = tmp_path / "tok"
    tokenize(Corpus("small", small_docs[:80]), TokenizeParams(vocab_size=400), out)
    before = (out / "manifest.json").read_bytes()
    with pytest.raises(TokenizeError):
        tokenize(Corpus("one", ["only one document"]), TokenizeParams(vocab_size=400), out)
    assert (out / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]


def test_a_folder_golf_did_not_write_is_never_replaced(tmp_path, small_docs):
    """D2: an existing folder without golf's manifest is refused before any work; an empty one
    and a data folder golf wrote are replaced."""
    from stages.files import OutputError

    docs = Corpus("small", small_docs[:80])
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="is a folder golf did not write"):
        tokenize(docs, TokenizeParams(vocab_size=400), foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    tokenize(docs, TokenizeParams(vocab_size=400), tmp_path / "empty")
    m = tokenize(docs, TokenizeParams(vocab_size=400, val_fraction=0.2), tmp_path / "empty")
    assert json.loads((tmp_path / "empty/manifest.json").read_text()) == m
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "foreign"]  # no .old, no .tmp


def test_output_through_a_symlink_replaces_the_target_and_keeps_the_link(tmp_path, small_docs):
    """P4: the link stays a link to the new data; nothing stray beside either."""
    real = tmp_path / "real"
    tokenize(Corpus("small", small_docs[:80]), TokenizeParams(vocab_size=400), real)
    (tmp_path / "link").symlink_to(real)
    m = tokenize(Corpus("small", small_docs[:90]), TokenizeParams(vocab_size=400),
                 tmp_path / "link")
    assert (tmp_path / "link").is_symlink() and (tmp_path / "link").resolve() == real
    assert json.loads((real / "manifest.json").read_text())["split"]["documents"] == 90 == \
        m["split"]["documents"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_the_current_folder_is_not_an_output(tmp_path, small_docs, monkeypatch):
    """T5: `tokenize --out .` would replace the folder the process stands in."""
    from stages.files import OutputError

    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutputError, match="is the current folder"):
        tokenize(Corpus("small", small_docs[:80]), TokenizeParams(vocab_size=400), ".")
    with pytest.raises(OutputError, match="is the current folder"):
        tokenize(Corpus("small", small_docs[:80]), TokenizeParams(vocab_size=400), "..")


def test_a_space_marker_in_the_corpus_gets_its_own_hint(tmp_path, small_docs):
    """U3: U+2581 decodes as a space; the error says so instead of 'byte accounting is wrong'."""
    docs = [d + " \u2581 marker" for d in small_docs[:80]]
    with pytest.raises(TokenizeError, match="contains U\\+2581, the SentencePiece space marker"):
        tokenize(Corpus("marked", docs), TokenizeParams(vocab_size=400), tmp_path / "out")
    assert not (tmp_path / "out").exists()
