"""Training traces of the task: the concise reasoning a problem needs, and overthinking."""

from __future__ import annotations

import random

from lapo.task import LEVELS, generate
from lapo.training.traces import OverthinkConfig, concise, overthinking


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
