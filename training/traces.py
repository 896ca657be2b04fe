"""Reasoning traces for supervised training: concise, and "overthinking" the way R1 models do.

The base model must think too long: its traces restate steps, re-check results, take detours
("Hmm, is it 13? No, ...") and sometimes verify everything again at the end. How much of that
a trace contains is drawn per sample, so lengths vary a lot between samples of one problem,
while the reasoning a correct answer NEEDS (`concise`) is one line per operation.

Overthinking is a habit of the whole trace, as in R1-style models (one sample re-checks
everything, the next barely at all), not independent coin flips per step: each trace draws
an intensity ``v ~ U(intensity_low, intensity_high)`` that scales every probability below
(mean 1: the average trace is as redundant as the probabilities say). A model trained on such
traces decides early how much it will think, which is the decision LAPO teaches it to make
on purpose.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from lapo.task import Problem


@dataclass(frozen=True)
class OverthinkConfig:
    p_restate: float = 0.5  # "Now I take 12 and apply *3."
    p_check: float = 0.55  # each extra "Wait, let me double-check" (geometric count)
    max_checks: int = 3
    p_detour: float = 0.35  # "Hmm, is it 37? No, 12*3=36."
    p_review: float = 0.5  # verify every step again at the end
    # Per-trace intensity v scaling the probabilities above (each capped at P_CAP).
    intensity_low: float = 0.0
    intensity_high: float = 2.0


P_CAP = 0.95


def step_line(a: int, op: str, k: int, b: int) -> str:
    return f"{a}{op}{k}={b}"


def indexed_step(i: int, a: int, op: str, k: int, b: int) -> str:
    """``(2) -3: 15-3=12``: the step's number, its operation (copied from the prompt), the sum."""
    return f"({i}) {op}{k}: {step_line(a, op, k, b)}"


def concise(problem: Problem) -> str:
    """The reasoning a correct answer needs: one line per operation."""
    return "".join(f"\n{indexed_step(i, *s)}" for i, s in enumerate(problem.steps(), 1)) + "\n"


def overthinking(problem: Problem, rng: random.Random, cfg: OverthinkConfig | None = None) -> str:
    """A correct but redundant trace; its length is random (see `OverthinkConfig`)."""
    cfg = cfg or OverthinkConfig()
    v = rng.uniform(cfg.intensity_low, cfg.intensity_high)
    p_restate, p_check, p_detour, p_review = (
        min(P_CAP, v * x) for x in (cfg.p_restate, cfg.p_check, cfg.p_detour, cfg.p_review))
    parts = [f"\nWe start with {problem.start}."]
    for i, (a, op, k, b) in enumerate(problem.steps(), 1):
        if rng.random() < p_restate:
            parts.append(f"\nStep ({i}) is {op}{k}, so I take {a} and apply {op}{k}.")
        parts.append(f"\n{indexed_step(i, a, op, k, b)}.")
        checks = 0
        while checks < cfg.max_checks and rng.random() < p_check:
            parts.append(f" Wait, let me double-check: {step_line(a, op, k, b)}. Yes.")
            checks += 1
        if rng.random() < p_detour:
            wrong = b + rng.choice([-2, -1, 1, 2])
            parts.append(f" Hmm, is it {wrong}? No, {step_line(a, op, k, b)}.")
    if rng.random() < p_review:
        parts.append("\nLet me verify everything again.")
        parts.extend(f"\n{indexed_step(i, *s)}. Correct."
                     for i, s in enumerate(problem.steps(), 1))
    parts.append(f"\nSo the final number is {problem.answer}.\n")
    return "".join(parts)


def completion(reasoning: str, problem: Problem) -> str:
    """A full assistant completion after the template's ``<think>``: reasoning, tag, answer."""
    return f"{reasoning}</think>The final number is {problem.answer}."
