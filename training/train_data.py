"""Training problems for the RL stages: the synthetic task, or a local data file of math problems.

A data file is read by `lapo.datafiles` (GSM8K, MATH, DeepScaleR or generic rows such as
``{"id": ..., "question": ..., "answer": ..., "level": optional}``; ``.jsonl``, ``.json``,
``.parquet``), the loader `lapo eval --data FILE` uses too; its problems are scored by
math-verify (checker ``math``). This is how the same pipeline trains a real model on real data
(see ``configs/gpu-r1-distill-1.5b.toml``). A ``reasoning_gym:TASK[+TASK...]`` spec trains on
that package's train split (`lapo.rgym`), scored by each task's own verifier.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass

from lapo import rgym
from lapo.datafiles import load_problems
from lapo.evaluation.data import MATH_INSTRUCTION
from lapo.task import generate

logger = logging.getLogger(__name__)
LEVELS = 5  # a stage's problem count is problems_per_level * LEVELS, as for the synthetic task


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
    """``source`` is 'synthetic' or a data file (see `lapo.datafiles`).

    Every row of a file is read and checked (a bad row raises `lapo.datafiles.DataError`);
    the problems are shuffled with ``seed`` and, when ``per_level`` is set, the stage trains
    on the first ``per_level * 5`` of them (logged when that drops any).
    """
    if source == "synthetic":
        return generate("train", per_level, seed=seed)
    if rgym.is_spec(source):
        # per_level problems per task and level (0: rgym.DEFAULT_PER_LEVEL), shuffled.
        problems = rgym.load(source, "train", per_level, seed)
        random.Random(seed).shuffle(problems)
        return problems
    problems = [MathProblem(p.id, p.question, p.answer, p.level, p.checker)
                for p in load_problems(source)]
    random.Random(seed).shuffle(problems)
    keep = per_level * LEVELS if per_level else len(problems)
    if keep < len(problems):
        logger.info("training on %d of the %d problems in %s (problems_per_level = %d, "
                    "x %d levels)", keep, len(problems), source, per_level, LEVELS)
    return problems[:keep]
