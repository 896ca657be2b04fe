"""Reasoning traces for supervised training: concise, and "overthinking" the way R1 models do.

The base model must think too long: its traces restate steps, re-check results, take detours
("Hmm, is it 13? No, ...") and sometimes verify everything again at the end. How much of that
a trace contains is drawn per sample, so lengths vary a lot between samples of one problem,
while the reasoning a correct answer NEEDS (`concise`) is one line per operation.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from training.task import Problem


@dataclass(frozen=True)
class OverthinkConfig:
    p_restate: float = 0.5  # "Now I take 12 and apply *3."
    p_check: float = 0.55  # each extra "Wait, let me double-check" (geometric count)
    max_checks: int = 3
    p_detour: float = 0.35  # "Hmm, is it 37? No, 12*3=36."
    p_review: float = 0.5  # verify every step again at the end


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
    parts = [f"\nWe start with {problem.start}."]
    for i, (a, op, k, b) in enumerate(problem.steps(), 1):
        if rng.random() < cfg.p_restate:
            parts.append(f"\nStep ({i}) is {op}{k}, so I take {a} and apply {op}{k}.")
        parts.append(f"\n{indexed_step(i, a, op, k, b)}.")
        checks = 0
        while checks < cfg.max_checks and rng.random() < cfg.p_check:
            parts.append(f" Wait, let me double-check: {step_line(a, op, k, b)}. Yes.")
            checks += 1
        if rng.random() < cfg.p_detour:
            wrong = b + rng.choice([-2, -1, 1, 2])
            parts.append(f" Hmm, is it {wrong}? No, {step_line(a, op, k, b)}.")
    if rng.random() < cfg.p_review:
        parts.append("\nLet me verify everything again.")
        parts.extend(f"\n{indexed_step(i, *s)}. Correct."
                     for i, s in enumerate(problem.steps(), 1))
    parts.append(f"\nSo the final number is {problem.answer}.\n")
    return "".join(parts)


def completion(reasoning: str, problem: Problem) -> str:
    """A full assistant completion after the template's ``<think>``: reasoning, tag, answer."""
    return f"{reasoning}</think>The final number is {problem.answer}."
