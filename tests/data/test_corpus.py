import platform

import pytest

from stages.data.corpus import MIN_DOC_CHARS, CorpusError, _stdlib_files, load_corpus


def test_stdlib_docs_is_real_deterministic_text(stdlib_corpus):
    docs = stdlib_corpus.docs
    assert 1500 <= len(docs) <= 4000
    total = sum(len(d.encode()) for d in docs)
    assert 1_000_000 <= total <= 3_000_000
    assert stdlib_corpus.info["python_version"] == platform.python_version()
    assert len(set(docs)) == len(docs)
    assert all(d == d.strip() and d for d in docs)
    assert sum(len(d) >= MIN_DOC_CHARS for d in docs) / len(docs) > 0.95
    assert load_corpus("stdlib-docs").docs == docs


def test_stdlib_files_skip_tests_and_idlelib():
    import sysconfig
    from pathlib import Path

    root = Path(sysconfig.get_paths()["stdlib"])
    files = [f.relative_to(root) for f in _stdlib_files(root)]
    assert files and all("idlelib" not in f.parts and "test" not in f.parts[:-1] for f in files)
    assert all("site-packages" not in f.parts for f in files)


def test_jsonl_and_txt_sources(tmp_path):
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"text": "  first doc  "}\n\n{"text": "second"}\n{"text": "second"}\n')
    assert load_corpus(str(jsonl)).docs == ["first doc", "second"]
    folder = tmp_path / "txt"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("bee")
    (folder / "sub" / "a.txt").write_text("ay\n")
    assert load_corpus(str(folder)).docs == ["bee", "ay"]


@pytest.mark.parametrize("content, message", [
    (b'{"text": "ok"}\n{"text": \n', "c.jsonl:2: not valid JSON"),
    (b'{"body": "x"}\n', 'c.jsonl:1: expected an object with a "text" string'),
    (b'{"text": "caf\xe9"}\n', "not UTF-8"),
    (b'{"text": "   "}\n', "no non-empty documents"),
])
def test_bad_corpora(tmp_path, content, message):
    path = tmp_path / "c.jsonl"
    path.write_bytes(content)
    with pytest.raises(CorpusError) as e:
        load_corpus(str(path))
    assert message in str(e.value)


def test_missing_and_unsupported_sources(tmp_path):
    with pytest.raises(CorpusError, match="no such file"):
        load_corpus(str(tmp_path / "nope.jsonl"))
    other = tmp_path / "c.csv"
    other.write_text("a,b")
    with pytest.raises(CorpusError, match="a corpus is"):
        load_corpus(str(other))
    bad_txt = tmp_path / "t"
    bad_txt.mkdir()
    (bad_txt / "x.txt").write_bytes(b"\xff\xfe bad")
    with pytest.raises(CorpusError, match="not UTF-8"):
        load_corpus(str(bad_txt))


def test_a_non_utf8_line_is_named_by_its_number(tmp_path):
    """U4: the line, not only a byte offset within it."""
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"text": "fine"}\n{"text": "also fine"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(CorpusError, match=r"c.jsonl:3: not UTF-8 text \(byte 13 of the line\)"):
        load_corpus(str(path))
    path.write_text('{"text": "\\ud800"}\n')
    with pytest.raises(CorpusError, match=r"c.jsonl:1: the text holds an unpaired surrogate"):
        load_corpus(str(path))
