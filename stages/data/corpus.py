"""Document sources for `golf tokenize`.

- `stdlib-docs`: the embedded default corpus, real English prose that exists on every CPython install:
  the docstrings of the standard library's modules, classes and functions (at least `MIN_DOC_CHARS`
  characters; tests, idlelib and site-packages skipped) plus the entries of `pydoc_data.topics`.
  Docstrings are read with `ast` from the source files, so no module is imported or executed, and the
  files are visited in sorted order: the extraction is deterministic for a given Python version.
- a `.jsonl` file of `{"text": ...}` objects, one document per line;
- a directory of `.txt` files (searched recursively, sorted), one document per file.

A document is its text with leading and trailing whitespace removed (as the official exporter does);
empty documents are dropped, and exact duplicates are kept once so the same text cannot be counted twice.
"""

from __future__ import annotations

import ast
import json
import platform
import sysconfig
import tokenize as pytokenize
from dataclasses import dataclass, field
from pathlib import Path

from stages.errors import GolfError

STDLIB_DOCS = "stdlib-docs"
MIN_DOC_CHARS = 200
_SKIP_DIRS = {"test", "tests", "idlelib", "site-packages", "dist-packages", "__pycache__"}


class CorpusError(GolfError):
    """A corpus that cannot be read or holds no documents."""


@dataclass(frozen=True)
class Corpus:
    name: str
    docs: list[str]
    info: dict = field(default_factory=dict)


def load_corpus(source: str) -> Corpus:
    """Read the documents of `source` (see the module docstring for what it may be)."""
    if source == STDLIB_DOCS:
        corpus = _stdlib_docs()
    else:
        path = Path(source)
        if path.is_dir():
            corpus = _txt_dir(path)
        elif path.is_file() and path.suffix == ".jsonl":
            corpus = _jsonl(path)
        elif path.exists():
            raise CorpusError(f"{source}: a corpus is '{STDLIB_DOCS}', a .jsonl file or a directory "
                              f"of .txt files")
        else:
            raise CorpusError(f"{source}: no such file or directory")
    if not corpus.docs:
        raise CorpusError(f"{source}: the corpus has no non-empty documents")
    return corpus


def _clean(texts: list[str]) -> list[str]:
    seen: set[str] = set()
    docs = []
    for text in texts:
        text = text.strip()
        if text and text not in seen:
            seen.add(text)
            docs.append(text)
    return docs


def _jsonl(path: Path) -> Corpus:
    texts = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise CorpusError(f"{path}:{lineno}: not UTF-8 text (byte {e.start} of the "
                                  f"line)") from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise CorpusError(f'{path}:{lineno}: expected an object with a "text" string')
            try:
                obj["text"].encode("utf-8")
            except UnicodeEncodeError:
                raise CorpusError(f"{path}:{lineno}: the text holds an unpaired surrogate (an "
                                  f"escape that is not Unicode text)") from None
            texts.append(obj["text"])
    return Corpus(str(path), _clean(texts), {"source": "jsonl"})


def _txt_dir(path: Path) -> Corpus:
    texts = []
    for file in sorted(path.rglob("*.txt")):
        try:
            texts.append(file.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise CorpusError(f"{file}: not UTF-8 text (byte {e.start})") from None
    return Corpus(str(path), _clean(texts), {"source": "txt-dir"})


def _docstrings(tree: ast.AST) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc.strip()) >= MIN_DOC_CHARS:
                out.append(doc)
    return out


def _stdlib_files(root: Path) -> list[Path]:
    files = []
    for file in sorted(root.rglob("*.py")):
        rel = file.relative_to(root)
        if _SKIP_DIRS.intersection(rel.parts[:-1]) or rel.name.startswith("test_"):
            continue
        files.append(file)
    return files


def _stdlib_docs() -> Corpus:
    root = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for file in _stdlib_files(root):
        try:
            with pytokenize.open(file) as f:  # honours PEP 263 coding cookies
                tree = ast.parse(f.read(), filename=str(file))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue  # a few stdlib files are deliberately broken test inputs
        texts.extend(_docstrings(tree))
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data
        topics = {}
    texts.extend(topics[k] for k in sorted(topics))
    info = {
        "source": STDLIB_DOCS,
        "python_version": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "min_doc_chars": MIN_DOC_CHARS,
    }
    return Corpus(STDLIB_DOCS, _clean(texts), info)
