"""The task generator: deterministic, graded, disjoint splits, checkable answers."""

from __future__ import annotations

import random

import pytest

from lapo.task import LEVELS, MAX_VALUE, apply, generate, random_problem, split_of


def test_deterministic_given_seed() -> None:
    assert generate("train", 10, seed=3) == generate("train", 10, seed=3)
    assert generate("train", 10, seed=3) != generate("train", 10, seed=4)


def test_splits_are_disjoint() -> None:
    train = {p.id for p in generate("train", 300, seed=0)}
    heldout = {p.id for p in generate("heldout", 60, seed=0)}
    assert train and heldout and not train & heldout
    # Disjoint by construction: the split is a function of the problem itself.
    assert all(split_of(p) == "heldout" for p in generate("heldout", 60, seed=7))


@pytest.mark.parametrize("level", LEVELS)
def test_every_problem_has_id_level_and_checkable_answer(level: int) -> None:
    rng = random.Random(level)
    for _ in range(200):
        prob = random_problem(rng, level)
        assert prob.level == level and prob.id.startswith(f"arith-L{level}-")
        assert len(prob.ops) == level + 1  # needed steps grow with the level
        value = prob.start
        for op, k in prob.ops:
            value = apply(value, op, k)
            assert 0 <= value <= MAX_VALUE
        assert prob.answer == str(value)
        assert str(prob.start) in prob.question


@pytest.mark.parametrize("bad", [0, 6, -1])
def test_bad_level(bad: int) -> None:
    with pytest.raises(ValueError, match="level must be one of"):
        random_problem(random.Random(0), bad)
