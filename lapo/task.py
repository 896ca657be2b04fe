"""The graded reasoning task: chained arithmetic whose needed reasoning grows with the level.

A problem starts from a number and applies ``level + 1`` operations in order::

    Start with 7. Apply in order: (1) +5, (2) *2, (3) -4. What is the final number?

A correct answer NEEDS one written step per operation (``(1) 7+5=12`` ...), so the minimal
reasoning grows linearly with the level (1..5). Values stay in [0, MAX_VALUE] so each step is
within reach of a tiny model. Generation is deterministic given a seed; the train / held-out
split is decided by a hash of the problem itself, so the two splits can never share a problem.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

LEVELS = (1, 2, 3, 4, 5)
MAX_VALUE = 20
MAX_OPERAND = 6
HELDOUT_SHARE = 8  # 1 problem in 8 (by hash) belongs to the held-out split


@dataclass(frozen=True)
class Problem:
    id: str
    level: int
    start: int
    ops: tuple[tuple[str, int], ...]
    answer: str

    @property
    def question(self) -> str:
        steps = ", ".join(f"({i}) {op}{k}" for i, (op, k) in enumerate(self.ops, 1))
        return f"Start with {self.start}. Apply in order: {steps}. What is the final number?"

    def steps(self) -> list[tuple[int, str, int, int]]:
        """(before, op, operand, after) for every operation: the reasoning a solution needs."""
        out, value = [], self.start
        for op, k in self.ops:
            after = apply(value, op, k)
            out.append((value, op, k, after))
            value = after
        return out

    def messages(self) -> list[dict[str, str]]:
        """The chat messages: the same text goes to training, `lapo eval` and the service."""
        return [{"role": "user", "content": self.question}]


def apply(value: int, op: str, k: int) -> int:
    if op == "+":
        return value + k
    if op == "-":
        return value - k
    if op == "*":
        return value * k
    raise ValueError(f"unknown op {op!r}")


def _problem_key(start: int, ops: tuple[tuple[str, int], ...]) -> str:
    text = f"{start}|" + ",".join(f"{op}{k}" for op, k in ops)
    return hashlib.sha256(text.encode()).hexdigest()


def split_of(problem: Problem) -> str:
    """'heldout' or 'train', decided by the problem's content hash (disjoint by construction)."""
    return "heldout" if int(problem.id.rsplit("-", 1)[1], 16) % HELDOUT_SHARE == 0 else "train"


def random_problem(rng: random.Random, level: int) -> Problem:
    """One problem of ``level``: level + 1 operations keeping every value in [0, MAX_VALUE]."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level}")
    value = rng.randint(1, MAX_VALUE)
    start, ops = value, []
    for _ in range(level + 1):
        choices = []
        if 2 <= value <= MAX_VALUE // 2:
            choices.append("*")
        if value <= MAX_VALUE - 1:
            choices += ["+", "+"]
        if value >= 1:
            choices += ["-", "-"]
        op = rng.choice(choices)
        if op == "*":
            k = 2
        elif op == "+":
            k = rng.randint(1, min(MAX_OPERAND, MAX_VALUE - value))
        else:
            k = rng.randint(1, min(MAX_OPERAND, value))
        ops.append((op, k))
        value = apply(value, op, k)
    ops_t = tuple(ops)
    key = _problem_key(start, ops_t)[:10]
    return Problem(id=f"arith-L{level}-{key}", level=level, start=start, ops=ops_t,
                   answer=str(value))


def generate(split: str, n_per_level: int, seed: int = 0,
             levels: tuple[int, ...] = LEVELS) -> list[Problem]:
    """``n_per_level`` distinct problems of each level from ``split`` ('train' or 'heldout')."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    out: list[Problem] = []
    for level in levels:
        rng = random.Random(f"{seed}-{level}")
        seen: set[str] = set()
        attempts = 0
        while len(seen) < n_per_level:
            attempts += 1
            if attempts > 200 * n_per_level + 1000:
                raise RuntimeError(f"cannot draw {n_per_level} {split} problems at level {level}")
            prob = random_problem(rng, level)
            if prob.id in seen or split_of(prob) != split:
                continue
            seen.add(prob.id)
            out.append(prob)
    return out

