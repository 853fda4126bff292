"""The 16,000,000-byte budget: the size report and the clip-multiplier search."""

import pytest

from stages.budget import LIMIT_BYTES, BudgetError, search_clip_multiplier, size_report
from stages.errors import GolfError


def test_size_report_counts_the_model_and_the_code():
    at_limit = size_report(LIMIT_BYTES - 30_000, 30_000)
    assert at_limit["total_bytes"] == LIMIT_BYTES and at_limit["fits"]
    assert at_limit["headroom_bytes"] == 0
    over = size_report(LIMIT_BYTES - 30_000 + 1, 30_000)
    assert not over["fits"] and over["headroom_bytes"] == -1
    assert size_report(10, 5, limit_bytes=15)["fits"] and not size_report(10, 6, 15)["fits"]


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
