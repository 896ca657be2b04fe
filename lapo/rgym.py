"""Real task data with real verifiers from the ``reasoning-gym`` package (``train`` extra).

A source spec ``reasoning_gym:TASK[+TASK...]`` (e.g. ``reasoning_gym:chain_sum+basic_arithmetic``)
names procedural task families; each has difficulty levels 1..3 written as that task's own
generator kwargs (`LEVELS`), chosen where SmolLM2-135M solves some problems (level 1) and
almost none (level 3). Use it as ``run.train_data`` (train split) or ``[eval] data`` /
``lapo eval --data`` (held-out split).

Splits are disjoint by construction: a question belongs to the held-out split iff the
SHA-256 of its text falls in the first `HELDOUT_SHARE` of the hash range, otherwise to the
train split. Each split keeps only its own questions (and each question once), whatever the
seeds and sizes asked for, so no question text is in both. Problem ids are
``rg-{task}-L{level}-{split}-{i}``: the same seed gives the same problems under the same ids.

Scoring is the task's own ``score_answer(answer, entry)``: the gold is a compact JSON of
``{"task", "level", "entry"}`` and the checker kind is ``reasoning_gym`` (`lapo.checker`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache

from lapo.think import LAPO_DEFAULT, ThinkProfile

PREFIX = "reasoning_gym:"
CHECKER = "reasoning_gym"
# The instruction every reasoning-gym prompt ends with (the SmolLM2 recipe's prompt: README,
# "Results on SmolLM2-135M-Instruct").
INSTRUCTION = "Think step by step, then give the final answer after 'Answer:'."
HELDOUT_SHARE = 0.2
DEFAULT_PER_LEVEL = 100  # per (task, level) when the caller asks for 0 ("all")
# score_answer gives partial credit for an answer that merely contains the gold
# (len(gold) / len(answer)); only an exact answer counts as correct.
CORRECT_SCORE = 1.0
_MAX_ANSWER_CHARS = 2000

# Level -> the task's generator kwargs. Measured Pass@1 (SmolLM2-135M-Instruct, fp32,
# 4 samples x 40 problems): chain_sum 2-3 one-digit terms 0.225, 4-5 terms up to two digits
# 0.031; basic_arithmetic 2 one-digit terms 0.138, 3-4 terms 0.044. A task's levels share no
# question (they differ in term count or, at equal counts, in operand digits).
LEVELS: dict[str, dict[int, dict]] = {
    "chain_sum": {
        1: {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 1},
        2: {"min_terms": 2, "max_terms": 3, "min_digits": 2, "max_digits": 2},
        3: {"min_terms": 4, "max_terms": 5, "min_digits": 1, "max_digits": 2},
    },
    "basic_arithmetic": {
        1: {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
        2: {"min_terms": 3, "max_terms": 3, "min_digits": 1, "max_digits": 1},
        3: {"min_terms": 4, "max_terms": 4, "min_digits": 1, "max_digits": 1},
    },
}
SPLITS = ("train", "heldout")
ANSWER_RE = re.compile(r"answer\s*:", re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?")


@dataclass(frozen=True)
class RGymProblem:
    id: str
    question: str
    answer: str  # gold: compact JSON {"task", "level", "entry"}, read by `score`
    level: int
    checker: str = CHECKER

    def messages(self) -> list[dict[str, str]]:
        return [{"role": "user", "content": f"{self.question}\n{INSTRUCTION}"}]


def is_spec(source: str) -> bool:
    return source.startswith(PREFIX)


def parse_spec(source: str) -> list[str]:
    """The task names of ``reasoning_gym:TASK[+TASK...]``; a ValueError names a bad one.

    >>> parse_spec("reasoning_gym:chain_sum+basic_arithmetic")
    ['chain_sum', 'basic_arithmetic']
    """
    if not is_spec(source):
        raise ValueError(f"not a reasoning-gym spec: {source!r} (write {PREFIX}TASK[+TASK...])")
    tasks = [t.strip() for t in source[len(PREFIX):].split("+")]
    known = ", ".join(sorted(LEVELS))
    if not any(tasks) or not all(tasks):
        raise ValueError(f"empty task name in {source!r}; write {PREFIX}TASK[+TASK...] "
                         f"with tasks from: {known}")
    for task in tasks:
        if task not in LEVELS:
            raise ValueError(f"unknown reasoning-gym task {task!r} in {source!r}; tasks with "
                             f"difficulty levels: {known} (add one to lapo.rgym.LEVELS)")
    return list(dict.fromkeys(tasks))


def split_of(question: str) -> str:
    """'heldout' for the first `HELDOUT_SHARE` of the hash range, else 'train'."""
    h = int(hashlib.sha256(question.encode()).hexdigest()[:8], 16)
    return "heldout" if h / 0x100000000 < HELDOUT_SHARE else "train"


def load(source: str, split: str, per_level: int, seed: int = 0) -> list[RGymProblem]:
    """``per_level`` distinct problems of ``split`` for every task and level of ``source``.

    Ordered by task (spec order), level, index. Raises ValueError when a level has fewer
    distinct questions in that split than asked for.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    per_level = per_level or DEFAULT_PER_LEVEL
    problems = []
    for task in parse_spec(source):
        for level in LEVELS[task]:
            problems += _generate(task, level, split, per_level, seed)
    return problems


def _dataset(task: str, level: int, size: int, seed: int):
    try:
        import reasoning_gym
    except ModuleNotFoundError as exc:
        raise RuntimeError("reasoning-gym tasks need the reasoning-gym package (the `train` "
                           "extra): pip install reasoning-gym==0.1.25") from exc
    return reasoning_gym.create_dataset(task, size=size, seed=seed, **LEVELS[task][level])


def _generate(task: str, level: int, split: str, n: int, seed: int) -> list[RGymProblem]:
    # reasoning-gym draws item i from random.Random(seed + i): a stream we filter.
    attempts = 20 * n + 1000
    ds = _dataset(task, level, attempts, seed)
    out, seen = [], set()
    for idx in range(attempts):
        entry = ds[idx]
        q = entry["question"]
        if q in seen or split_of(q) != split:
            continue
        seen.add(q)
        gold = json.dumps({"task": task, "level": level,
                           "entry": {k: entry[k] for k in ("question", "answer", "metadata")}},
                          separators=(",", ":"), default=str)
        out.append(RGymProblem(f"rg-{task}-L{level}-{split}-{len(out)}", q, gold, level))
        if len(out) == n:
            return out
    raise ValueError(f"reasoning-gym {task} level {level} has only {len(out)} distinct "
                     f"{split} questions in {attempts} draws, fewer than the {n} asked for: "
                     "lower problems_per_level / per_level")


@lru_cache(maxsize=64)
def _scorer(task: str, level: int):
    return _dataset(task, level, 1, 0)


def extract_answer(answer: str) -> str | None:
    """The model's final answer: the first line after the last 'Answer:', else the last number.

    >>> extract_answer("3 + 4 = 7.\\nAnswer: **7**.")
    '7'
    >>> extract_answer("so it is 12"), extract_answer("nothing") is None
    ('12', True)
    """
    text = answer[-_MAX_ANSWER_CHARS:]
    marks = list(ANSWER_RE.finditer(text))
    if marks:
        rest = text[marks[-1].end():].strip()
        line = rest.splitlines()[0] if rest else ""
        got = line.strip().strip("*`$ ").rstrip(".").strip("*`$ ")
        return got or None
    numbers = _NUMBER_RE.findall(text)
    return numbers[-1] if numbers else None


def score(gold: str, completion: str, profile: ThinkProfile = LAPO_DEFAULT,
          budget_in_prompt: bool = False) -> float:
    """The task's own ``score_answer`` on the completion's final answer (0 when none)."""
    text = profile.answer(completion, budget_in_prompt)
    if text is None:
        return 0.0
    got = extract_answer(text)
    if got is None:
        return 0.0
    g = json.loads(gold)
    return float(_scorer(g["task"], int(g["level"])).score_answer(got, g["entry"]))


def check(gold: str, completion: str, profile: ThinkProfile = LAPO_DEFAULT,
          budget_in_prompt: bool = False) -> bool:
    """Correct when the task's score reaches `CORRECT_SCORE` (exact, no partial credit)."""
    return score(gold, completion, profile, budget_in_prompt) >= CORRECT_SCORE
