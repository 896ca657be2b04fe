"""Training problems from a data file: read by `lapo.datafiles`, shuffled, capped per config."""

from __future__ import annotations

import json

import pytest

from lapo.datafiles import DataError
from lapo.training.train_data import MathProblem, load_train_problems


def _write(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_math_file_trains_with_the_math_checker(tmp_path) -> None:
    path = tmp_path / "math.jsonl"
    _write(path, [{"problem": f"P{i}", "solution": f"so \\boxed{{{i}}}", "level": "Level 2"}
                  for i in range(12)])
    problems = load_train_problems(str(path), per_level=0, seed=1)
    assert len(problems) == 12 and all(isinstance(p, MathProblem) for p in problems)
    assert {(p.checker, p.level) for p in problems} == {("math", 2)}
    assert sorted(int(p.answer) for p in problems) == list(range(12))
    assert [p.id for p in problems] == [p.id for p in load_train_problems(str(path), 0, 1)]
    assert len(load_train_problems(str(path), per_level=2, seed=1)) == 10  # 2 per level x 5


def test_a_bad_row_fails_before_training(tmp_path) -> None:
    path = tmp_path / "gsm8k.jsonl"
    _write(path, [{"question": "q", "answer": "#### 1"}, {"question": "q2", "answer": "2"}])
    with pytest.raises(DataError, match=r"gsm8k\.jsonl, line 2, field 'answer'"):
        load_train_problems(str(path), per_level=200, seed=0)
