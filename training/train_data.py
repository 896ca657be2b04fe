"""Training problems for the RL stages: the synthetic task, or a JSONL file of math problems.

A JSONL row is ``{"id": ..., "question": ..., "answer": ..., "level": optional}``; such
problems are scored by math-verify (checker ``math``). This is how the same pipeline trains a
real model on real data (see ``configs/gpu-r1-distill-1.5b.toml``).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from evaluation.data import MATH_INSTRUCTION
from lapo.task import generate


@dataclass(frozen=True)
class MathProblem:
    id: str
    question: str
    answer: str
    level: int = 0
    checker: str = "math"

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"{self.question}\n{MATH_INSTRUCTION}"}]


def load_train_problems(source: str, per_level: int, seed: int) -> list:
    """``source`` is 'synthetic' or a path to a JSONL file (``per_level`` caps its rows)."""
    if source == "synthetic":
        return generate("train", per_level, seed=seed)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"training data not found: {source}")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    problems = [MathProblem(str(r["id"]), r["question"], str(r["answer"]), int(r.get("level", 0)))
                for r in rows]
    random.Random(seed).shuffle(problems)
    return problems[: per_level * 5] if per_level else problems
