"""Local data files of math problems: GSM8K, MATH, DeepScaleR-style and generic rows.

One loader for training (`run.train_data`) and evaluation (`lapo eval --data FILE`), so both
read a file the same way and score its answers with the same checker (``math``: math-verify,
see `lapo.checker`).

    from lapo.datafiles import load_problems
    problems = load_problems("data/gsm8k_test.jsonl")           # format from the rows
    problems = load_problems("mine.parquet", question_field="prompt", answer_field="target")

Files: ``.jsonl``/``.ndjson`` (one object per line), ``.json`` (a list of objects, or an object
with the list under ``data``, ``rows`` or ``examples``; JSON lines saved as ``.json`` are read
too) and ``.parquet`` (pyarrow, else pandas). Formats, detected from the first row's fields
unless ``format=`` says:

============  ===================  ===============================================
format        question / answer    gold answer
============  ===================  ===============================================
gsm8k         question / answer    after the last ``####``, commas removed
math          problem / solution   content of the last ``\\boxed{}``/``\\fbox{}``
deepscaler    problem / answer     the answer field (``solution`` ignored)
generic       question / answer    the answer field (fields configurable)
============  ===================  ===============================================

``question``+``answer`` rows are GSM8K when an answer holds ``####``, else generic.
Ids: the row's ``id``/``unique_id``/``problem_id``, else the first 16 hex digits of the sha256
of the question text (the same problem gets the same id in every file and run); duplicates are
errors. Levels: ``Level N`` or a number in ``level``/``difficulty`` (rounded); no level field
gives level 1 (`DEFAULT_LEVEL`); a level that is not a number (MATH's ``Level ?``) gives
level 0 (`UNKNOWN_LEVEL`): the row is kept and reported as its own group. Every row is loaded
unless ``limit`` says otherwise. A bad row raises `DataError` naming the file, the line (JSONL)
or row index (JSON, parquet) and the field.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import numbers
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

FORMATS = ("auto", "gsm8k", "math", "deepscaler", "generic")
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}
ID_FIELDS = ("id", "unique_id", "problem_id")
LEVEL_FIELDS = ("level", "difficulty")
LIST_KEYS = ("data", "rows", "examples")
DEFAULT_LEVEL = 1  # the row has no level field: one group
UNKNOWN_LEVEL = 0  # the row has a level that is not a number ("Level ?"): kept, own group
CHECKER = "math"

_LEVEL_RE = re.compile(r"^(?:level\s*)?(-?\d+(?:\.\d+)?)$", re.IGNORECASE)
_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")


class DataError(ValueError):
    """A data file that cannot be read: the message names the file, row and field."""

    def __init__(self, path: str | Path, message: str, where: str | None = None,
                 field: str | None = None) -> None:
        self.path, self.where, self.field = str(path), where, field
        parts = [self.path] + [p for p in (where, field and f"field {field!r}") if p]
        super().__init__(f"{', '.join(parts)}: {message}")


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    answer: str  # the gold answer, checked by `checker`
    level: int
    checker: str = CHECKER


def looks_like_data_file(value: str) -> bool:
    """True for an existing file or a name with a data file's suffix (to say 'not found')."""
    path = Path(value)
    return path.suffix.lower() in SUFFIXES or path.is_file()


def gsm8k_gold(answer: str) -> str:
    """The number after GSM8K's last ``####``, without thousands separators.

    >>> gsm8k_gold("3 + 4 = <<3+4=7>>7 apples.\\n#### 1,234")
    '1234'
    """
    if "####" not in answer:
        raise ValueError("GSM8K answer has no '#### <answer>' line")
    gold = answer.rsplit("####", 1)[1].strip().replace(",", "")
    if not gold:
        raise ValueError("GSM8K answer is empty after '####'")
    return gold


def last_boxed(text: str) -> str:
    """The content of the last ``\\boxed{...}`` or ``\\fbox{...}``, nested braces included.

    >>> last_boxed(r"So $\\boxed{2}$, then $\\boxed{\\frac{1}{2}}$.")
    '\\\\frac{1}{2}'
    """
    found = list(_BOX_RE.finditer(text))
    if not found:
        raise ValueError("solution has no \\boxed{} answer")
    i = found[-1].end()
    while i < len(text) and text[i] == " ":
        i += 1
    if i < len(text) and text[i] != "{":
        # "\boxed 5": the MATH data set's brace-less form, one token up to space or '$'
        return re.split(r"[\s$]", text[i:], maxsplit=1)[0]
    depth, start = 0, i + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2  # an escaped character (\{ \} \\) opens or closes nothing
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                gold = text[start:i].strip()
                if not gold:
                    raise ValueError("the last \\boxed{} is empty")
                return gold
        i += 1
    raise ValueError("the last \\boxed{ has no closing brace")


@dataclass(frozen=True)
class _Format:
    name: str
    question: str
    answer: str
    gold: Callable[[str], str]  # raises ValueError saying what is wrong


def _as_is(answer: str) -> str:
    return answer.strip()


_FORMATS = {
    "gsm8k": _Format("gsm8k", "question", "answer", gsm8k_gold),
    "math": _Format("math", "problem", "solution", last_boxed),
    "deepscaler": _Format("deepscaler", "problem", "answer", _as_is),
    "generic": _Format("generic", "question", "answer", _as_is),
}


def load_problems(path: str | Path, format: str = "auto", limit: int | None = None, *,
                  question_field: str | None = None, answer_field: str | None = None,
                  level_field: str | None = None, id_field: str | None = None) -> list[Problem]:
    """Every row of ``path`` (the first ``limit`` when given) as a `Problem`.

    ``format``: one of `FORMATS`. The ``*_field`` arguments rename the fields; naming the
    question or answer field with ``format="auto"`` means generic rows. A field named here
    must be in every row; without ``level_field``/``id_field`` the usual names are tried.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 (or None for every row), got {limit}")
    rows = list(_read_rows(Path(path), limit))
    if not rows:
        raise DataError(path, "the file has no rows")
    fmt = _choose_format(path, rows, format, question_field, answer_field)
    problems, seen, unknown_levels = [], {}, 0
    for where, row in rows:
        prob = _problem(path, where, row, fmt, level_field, id_field)
        if prob.id in seen:
            field = id_field or next((k for k in ID_FIELDS if row.get(k) not in (None, "")),
                                     None)
            how = "" if field else " (hashed from the question: the same question twice)"
            raise DataError(path, f"duplicate id {prob.id!r}{how}: also at {seen[prob.id]}",
                            where, field or fmt.question)
        seen[prob.id] = where
        unknown_levels += prob.level == UNKNOWN_LEVEL
        problems.append(prob)
    if unknown_levels:
        logger.warning("%s: %d row(s) have a level that is not a number (e.g. 'Level ?'): "
                       "level %d", path, unknown_levels, UNKNOWN_LEVEL)
    logger.info("read %d problems from %s (%s)", len(problems), path, fmt.name)
    return problems


def _read_rows(path: Path, limit: int | None) -> Iterator[tuple[str, Any]]:
    """(where, row) pairs: 'line N' (1-based) for JSON lines, 'row index N' otherwise."""
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(path, f"unknown file type {path.suffix!r}; "
                        f"use one of {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise DataError(path, "data file not found")
    if kind == "parquet":
        rows = _parquet_rows(path, limit)
    else:
        try:
            text = path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            raise DataError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        rows = _json_rows(path, text) if kind == "json" else _jsonl_rows(path, text)
    for n, item in enumerate(rows, start=1):
        yield item
        if n == limit:
            return  # before the next row is parsed: rows past the limit are not read


def _jsonl_rows(path: Path, text: str) -> Iterator[tuple[str, Any]]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield f"line {lineno}", json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"invalid JSON: {exc.msg} (column {exc.colno})",
                            f"line {lineno}") from exc


def _json_rows(path: Path, text: str) -> Iterator[tuple[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            # JSON lines saved as .json (what `datasets`' to_json writes by default)
            return _jsonl_rows(path, text)
        raise DataError(path, f"invalid JSON: {exc.msg} (column {exc.colno})",
                        f"line {exc.lineno}") from exc
    if isinstance(data, dict):
        key = next((k for k in LIST_KEYS if isinstance(data.get(k), list)), None)
        if key is None:
            raise DataError(path, "a top-level object needs its rows as a list under "
                            f"{', '.join(map(repr, LIST_KEYS))}; it has keys "
                            f"{', '.join(map(repr, list(data)[:10]))}")
        data = data[key]
    if not isinstance(data, list):
        raise DataError(path, f"expected a list of objects, got {type(data).__name__}")
    return ((f"row index {i}", row) for i, row in enumerate(data))


def _parquet_rows(path: Path, limit: int | None) -> Iterator[tuple[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        pq = None
    try:
        if pq is not None:
            table = pq.read_table(path)
            rows = (table.slice(0, limit) if limit else table).to_pylist()
        else:
            import pandas as pd

            frame = pd.read_parquet(path)
            rows = (frame.head(limit) if limit else frame).to_dict("records")
    except ImportError as exc:  # no pandas, or pandas without a parquet engine
        raise DataError(path, "reading parquet needs pyarrow: pip install pyarrow "
                        "(or convert the file to JSONL)") from exc
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(path, f"not a readable parquet file ({exc})") from exc
    return ((f"row index {i}", row) for i, row in enumerate(rows))


def _choose_format(path: str | Path, rows: list[tuple[str, Any]], format: str,
                   question_field: str | None, answer_field: str | None) -> _Format:
    if format == "auto" and (question_field or answer_field):
        format = "generic"
    if format == "auto":
        where, first = rows[0]
        if not isinstance(first, dict):
            raise DataError(path, _not_object(first), where)
        keys = set(first)
        if {"problem", "answer"} <= keys:
            format = "deepscaler"
        elif {"problem", "solution"} <= keys:
            format = "math"
        elif {"question", "answer"} <= keys:
            gsm8k = any(isinstance(r, dict) and "####" in str(r.get("answer")) for _, r in rows)
            format = "gsm8k" if gsm8k else "generic"
        else:
            raise DataError(path, f"cannot tell the format from the fields {sorted(keys)}: "
                            "expected question+answer (GSM8K, generic), problem+solution "
                            "(MATH) or problem+answer (DeepScaleR); or pass the format and "
                            "the question and answer field names", where)
    fmt = _FORMATS[format]
    return _Format(fmt.name, question_field or fmt.question, answer_field or fmt.answer,
                   fmt.gold)


def _not_object(row: Any) -> str:
    return f"a row must be a JSON object, got {type(row).__name__}"


def _problem(path: str | Path, where: str, row: Any, fmt: _Format, level_field: str | None,
             id_field: str | None) -> Problem:
    if not isinstance(row, dict):
        raise DataError(path, _not_object(row), where)

    def fail(field: str, message: str) -> DataError:
        return DataError(path, message, where, field)

    question = row.get(fmt.question)
    if _missing(question):
        raise fail(fmt.question, f"missing or empty (a {fmt.name} row needs it)")
    if not isinstance(question, str):
        raise fail(fmt.question, f"must be text, got {type(question).__name__}")
    answer = row.get(fmt.answer)
    if _missing(answer):
        raise fail(fmt.answer, f"missing or empty (a {fmt.name} row needs it)")
    if isinstance(answer, bool) or not isinstance(answer, str | numbers.Real):
        raise fail(fmt.answer, f"must be text or a number, got {type(answer).__name__}")
    try:
        gold = fmt.gold(str(answer))
    except ValueError as exc:
        raise fail(fmt.answer, str(exc)) from exc
    if not gold:
        raise fail(fmt.answer, "the answer is empty")
    return Problem(_row_id(row, question, id_field, fail), question, gold,
                   _row_level(row, level_field, fail))


def _missing(value: Any) -> bool:
    if isinstance(value, float) and math.isnan(value):  # pandas' null
        return True
    return value is None or (isinstance(value, str) and not value.strip())


def _row_id(row: dict, question: str, id_field: str | None,
            fail: Callable[[str, str], DataError]) -> str:
    if id_field is not None and _missing(row.get(id_field)):
        raise fail(id_field, "missing or empty (named as the id field)")
    for key in (id_field,) if id_field else ID_FIELDS:
        value = row.get(key)
        if _missing(value):
            continue
        if isinstance(value, bool) or not isinstance(value, str | numbers.Integral):
            raise fail(key, f"an id must be text or an integer, got {type(value).__name__}")
        return str(value).strip()
    return hashlib.sha256(question.strip().encode("utf-8")).hexdigest()[:16]


def _row_level(row: dict, level_field: str | None,
               fail: Callable[[str, str], DataError]) -> int:
    if level_field is not None and _missing(row.get(level_field)):
        raise fail(level_field, "missing or empty (named as the level field)")
    for key in (level_field,) if level_field else LEVEL_FIELDS:
        value = row.get(key)
        if _missing(value):
            continue
        return parse_level(value)
    return DEFAULT_LEVEL


def parse_level(value: Any) -> int:
    """A difficulty level: ``Level N`` or a number (rounded); anything else is unknown.

    >>> [parse_level(v) for v in ("Level 3", 4, 2.6, "5", "Level ?", "hard")]
    [3, 4, 3, 5, 0, 0]
    """
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return int(round(value)) if math.isfinite(value) else UNKNOWN_LEVEL
    if isinstance(value, str):
        found = _LEVEL_RE.match(value.strip())
        if found:
            return int(round(float(found.group(1))))
    return UNKNOWN_LEVEL
