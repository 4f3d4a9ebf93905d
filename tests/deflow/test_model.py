"""Pure rules: progress strings, option precedence, batching, claim windows, phase tokens, slugs."""

from __future__ import annotations

import pytest

from celery_deflow.model import Progress, batch_ranges, merge_options, next_window, parse_token, slugify


@pytest.mark.parametrize(
    ("done", "total", "percent"),
    [
        (1, 4, "25.00% - 1/4"),
        (1, 3, "33.33% - 1/3"),
        (4, 4, "100.00% - 4/4"),
        (0, 0, "0% - 0/0"),
        (0, 5, "0.00% - 0/5"),
    ],
)
def test_progress(done: int, total: int, percent: str) -> None:
    assert Progress.of(done, total) == Progress(done, total, percent)


def test_option_precedence() -> None:
    options = merge_options({"task_timeout": 1}, {"task_timeout": 2, "task_concurrency": 3}, None, {"task_timeout": 4})
    assert options.to_dict() == {
        "task_timeout": 4.0,
        "task_concurrency": 3,
        "task_max_fail_count": 1,
        "task_fail_retry_delay": None,
    }
    assert merge_options({"task_max_fail_count": 0}).attempts == 1
    assert merge_options({"task_timeout": 0}).task_timeout is None
    for bad in ({"task_timeout": "1"}, {"task_concurrency": 1.5}, {"task_max_fail_count": -1}, {"nope": 1}):
        with pytest.raises(ValueError, match=r"task_|unknown"):
            merge_options(bad)


def test_batch_ranges() -> None:
    assert list(batch_ranges(0, 0, max_batch_size=500, target_batches=64)) == []
    assert list(batch_ranges(0, 3, max_batch_size=500, target_batches=64)) == [(0, 1), (1, 2), (2, 3)]
    ranges = list(batch_ranges(0, 10_000, max_batch_size=500, target_batches=64))
    assert len(ranges) == 64
    assert ranges[0] == (0, 157)
    assert ranges[-1][1] == 10_000
    big = list(batch_ranges(5, 100_005, max_batch_size=500, target_batches=64))
    assert {hi - lo for lo, hi in big} == {500}
    assert big[0][0] == 5


def test_next_window() -> None:
    assert next_window(0, None, window=0.02, limit=500) == 1
    assert next_window(1, 0.0001, window=0.02, limit=500) == 4  # grows at most 4x per claim
    assert next_window(200, 0.0001, window=0.02, limit=500) == 200
    assert next_window(500, 0.0, window=0.02, limit=500) == 500
    assert next_window(8, 1.0, window=0.02, limit=500) == 1


def test_tokens_and_slugs() -> None:
    assert parse_token("12:t") == (12, "t")
    with pytest.raises(ValueError, match="not a phase token"):
        parse_token("12:x")
    assert slugify("exp two") == "exp-two"
    assert slugify('a"b{c}') == "abc"
    assert slugify("   ") == "workflow"


def test_cursor_split() -> None:
    from celery_deflow.execution import _Cursor

    cursor = _Cursor(["r", 0, 10])
    assert cursor.take(2) == ["r", 0, 2]
    assert cursor.split() == (6, 10)
    assert cursor.remaining() == 4
    assert cursor.take(10) == ["r", 2, 6]
    assert cursor.take(1) is None
    assert _Cursor(["r", 0, 1]).split() is None
    assert _Cursor(["l", [[3, 2], [4, 2]]]).split() is None
