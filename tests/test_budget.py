"""The 16,000,000-byte budget: what code counts, the size report, and the clip-multiplier search."""

import os

import pytest

from stages.budget import (
    LIMIT_BYTES,
    BudgetError,
    code_bytes,
    code_files,
    search_clip_multiplier,
    size_report,
)
from stages.errors import GolfError
from tests.conftest import ROOT


def _python_files(root):
    found = set()
    for package in ("stages", "golfcli"):
        for folder, dirs, files in os.walk(root / package):
            dirs[:] = [d for d in dirs if d != "__pycache__"]
            found.update(os.path.join(folder, f) for f in files if f.endswith(".py"))
    return found


def test_counted_code_is_every_python_file_of_the_library_and_the_cli():
    assert {str(p) for p in code_files()} == _python_files(ROOT)
    assert code_bytes() == sum(os.path.getsize(p) for p in _python_files(ROOT))


def test_code_files_skip_caches_and_other_folders(tmp_path):
    for name in ("stages/a.py", "stages/sub/b.py", "golfcli/c.py", "stages/__pycache__/d.py",
                 "tests/e.py", "stages/notes.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x = 1\n")
    assert {p.relative_to(tmp_path).as_posix() for p in code_files(tmp_path)} == \
        {"stages/a.py", "stages/sub/b.py", "golfcli/c.py"}
    assert code_bytes(tmp_path) == 3 * len("x = 1\n")


def test_size_report_counts_the_model_and_the_code():
    code = code_bytes()
    at_limit = size_report(LIMIT_BYTES - code)
    assert at_limit["total_bytes"] == LIMIT_BYTES and at_limit["fits"]
    assert at_limit["headroom_bytes"] == 0 and at_limit["code_files"] == len(code_files())
    over = size_report(LIMIT_BYTES - code + 1)
    assert not over["fits"] and over["headroom_bytes"] == -1
    assert size_report(10, limit_bytes=code + 10)["fits"]


def _bytes_at(multiplier):  # wider clips, fewer bytes
    return int(1_000_000 / multiplier)


def test_search_keeps_the_base_when_it_already_fits():
    result, report = search_clip_multiplier(lambda m: (m, _bytes_at(m)), 1.0, 2_000_000)
    assert result == report["clip_multiplier"] == 1.0 and len(report["tries"]) == 1


def test_search_finds_the_smallest_multiplier_that_fits():
    target = 300_000  # fits from 1,000,000 / 300,000 = 3.33 on
    result, report = search_clip_multiplier(lambda m: (m, _bytes_at(m)), 1.0, target)
    assert result == report["clip_multiplier"]
    assert report["total_bytes"] == _bytes_at(result) <= target
    assert 10 / 3 <= result < 10 / 3 * 1.01  # bisected close to the threshold
    tried = [t["clip_multiplier"] for t in report["tries"]]
    assert tried[:3] == [1.0, 2.0, 4.0]  # doubles until it fits, then bisects
    assert all(2.0 <= m <= 4.0 for m in tried[3:])


def test_search_gives_up_beyond_64_times_the_base():
    with pytest.raises(BudgetError, match="cannot reach 100 bytes"):
        search_clip_multiplier(lambda m: (m, _bytes_at(m)), 1.0, 100)
    assert issubclass(BudgetError, GolfError)  # the CLI prints it as one line
