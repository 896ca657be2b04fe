"""The task generator: deterministic, graded, disjoint splits, checkable answers."""

from __future__ import annotations

import random

import pytest

from training.task import LEVELS, MAX_VALUE, apply, generate, random_problem, split_of
from training.traces import OverthinkConfig, concise, overthinking


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


def test_needed_reasoning_grows_with_level() -> None:
    probs = generate("train", 50, seed=0)
    mean_len = {
        level: sum(len(concise(p)) for p in probs if p.level == level) / 50 for level in LEVELS
    }
    assert all(mean_len[a] < mean_len[a + 1] for a in LEVELS[:-1])


def test_overthinking_is_longer_and_varies_within_a_problem() -> None:
    prob = generate("train", 1, seed=0, levels=(3,))[0]
    rng = random.Random(0)
    lengths = [len(overthinking(prob, rng)) for _ in range(50)]
    assert min(lengths) > len(concise(prob))
    assert max(lengths) > 2 * min(lengths)
    assert all(prob.answer in overthinking(prob, random.Random(i)) for i in range(5))


def test_overthinking_intensity_is_per_trace() -> None:
    prob = generate("train", 1, seed=0, levels=(3,))[0]
    calm = OverthinkConfig(intensity_low=0.0, intensity_high=0.0)
    trace = overthinking(prob, random.Random(0), calm)
    # Intensity 0: the frame and one line per step, nothing redundant.
    assert trace == f"\nWe start with {prob.start}." + "".join(
        f"\n{line}." for line in concise(prob).strip().split("\n")) + (
        f"\nSo the final number is {prob.answer}.\n")
    eager = OverthinkConfig(intensity_low=2.0, intensity_high=2.0)
    rng = random.Random(0)
    assert min(len(overthinking(prob, rng, eager)) for _ in range(20)) > 2 * len(trace)


@pytest.mark.parametrize("bad", [0, 6, -1])
def test_bad_level(bad: int) -> None:
    with pytest.raises(ValueError, match="level must be one of"):
        random_problem(random.Random(0), bad)
