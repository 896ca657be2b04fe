"""Local data files: every format read to the same problems, every bad row named precisely."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from lapo.datafiles import (
    DEFAULT_LEVEL,
    UNKNOWN_LEVEL,
    DataError,
    last_boxed,
    load_problems,
    parse_level,
)


def _jsonl(rows: list) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _hash(question: str) -> str:
    return hashlib.sha256(question.encode()).hexdigest()[:16]


GSM8K = [
    {"question": "Ann has 3 apples and buys 4. How many?", "answer": "3+4=<<3+4=7>>7\n#### 7"},
    {"question": "A car costs $1,234. Price?", "answer": "It is 1,234.\n#### 1,234"},
]
MATH = [
    {"problem": "Half of one?", "solution": r"First $\boxed{2}$ is wrong; "
     r"the answer is $\boxed{\frac{1}{2}}$.", "level": "Level 3", "type": "Algebra"},
    {"problem": "A set?", "solution": r"It is $\fbox{\{1, 2\}}$.", "level": "Level ?",
     "type": "Prealgebra"},
    {"problem": "Nested?", "solution": r"$\boxed{\sqrt{\frac{a}{b^{2}}}}$",
     "level": "Level 5", "type": "Algebra", "unique_id": "test/algebra/1.json"},
]
DEEPSCALER = [
    {"problem": "What is 2+2?", "answer": "4", "solution": "2+2=4"},
    {"problem": "Solve x^2=9, x>0.", "answer": "3", "difficulty": 2.6},
]
GENERIC = [
    {"id": 7, "question": "Q one", "answer": 5, "level": 2},
    {"id": "b", "question": "Q two", "answer": "x+1"},
]

# (file name, content, format argument, expected (id, answer, level) per row)
CASES = [
    ("gsm8k.jsonl", _jsonl(GSM8K), "auto",
     [(_hash(GSM8K[0]["question"]), "7", DEFAULT_LEVEL),
      (_hash(GSM8K[1]["question"]), "1234", DEFAULT_LEVEL)]),
    ("math.jsonl", _jsonl(MATH), "auto",
     [(_hash("Half of one?"), r"\frac{1}{2}", 3), (_hash("A set?"), r"\{1, 2\}", UNKNOWN_LEVEL),
      ("test/algebra/1.json", r"\sqrt{\frac{a}{b^{2}}}", 5)]),
    ("deepscaler.json", json.dumps(DEEPSCALER), "auto",
     [(_hash("What is 2+2?"), "4", DEFAULT_LEVEL), (_hash("Solve x^2=9, x>0."), "3", 3)]),
    ("generic.json", json.dumps({"data": GENERIC}), "auto",
     [("7", "5", 2), ("b", "x+1", DEFAULT_LEVEL)]),
    ("rows.json", json.dumps({"rows": GENERIC}), "generic",
     [("7", "5", 2), ("b", "x+1", DEFAULT_LEVEL)]),
    ("jsonlines.json", _jsonl(GSM8K), "gsm8k",  # JSON lines saved as .json (datasets' default)
     [(_hash(GSM8K[0]["question"]), "7", DEFAULT_LEVEL),
      (_hash(GSM8K[1]["question"]), "1234", DEFAULT_LEVEL)]),
    ("blank-lines.jsonl", "\n" + _jsonl(GENERIC[:1]) + "\n\n", "auto", [("7", "5", 2)]),
]


@pytest.mark.parametrize(("name", "text", "fmt", "expected"), CASES, ids=[c[0] for c in CASES])
def test_formats(tmp_path: Path, name: str, text: str, fmt: str, expected: list) -> None:
    path = tmp_path / name
    path.write_text(text)
    problems = load_problems(path, format=fmt)
    assert [(p.id, p.answer, p.level) for p in problems] == expected
    assert all(p.checker == "math" and p.question for p in problems)


def test_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "math.parquet"
    pq.write_table(pa.Table.from_pylist(MATH), path)
    problems = load_problems(path)
    assert [(p.answer, p.level) for p in problems] == [
        (r"\frac{1}{2}", 3), (r"\{1, 2\}", UNKNOWN_LEVEL), (r"\sqrt{\frac{a}{b^{2}}}", 5)]
    assert len(load_problems(path, limit=2)) == 2
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([MATH[0], {**MATH[1], "solution": "no box"}]), bad)
    with pytest.raises(DataError, match=r"bad\.parquet, row index 1, field 'solution': .*boxed"):
        load_problems(bad)
    bad.write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"bad\.parquet: not a readable parquet file"):
        load_problems(bad)


def test_parquet_without_a_reader_says_what_to_install(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.parquet"
    path.write_bytes(b"PAR1")
    for name in ("pyarrow", "pyarrow.parquet", "pandas"):
        monkeypatch.setitem(sys.modules, name, None)  # None in sys.modules: ImportError
    with pytest.raises(DataError, match=r"x\.parquet: reading parquet needs pyarrow: pip install"):
        load_problems(path)


def test_generic_field_names(tmp_path: Path) -> None:
    path = tmp_path / "custom.jsonl"
    path.write_text(_jsonl([{"key": "k1", "prompt": "P?", "target": "9", "hardness": "Level 4"}]))
    (prob,) = load_problems(path, question_field="prompt", answer_field="target",
                            level_field="hardness", id_field="key")
    assert (prob.id, prob.question, prob.answer, prob.level) == ("k1", "P?", "9", 4)
    with pytest.raises(DataError, match=r"custom\.jsonl, line 1, field 'idx': missing"):
        load_problems(path, question_field="prompt", answer_field="target", id_field="idx")


def test_hashed_ids_are_stable_and_ignore_file_and_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.json"
    a.write_text(_jsonl(GSM8K))
    b.write_text(json.dumps(GSM8K[::-1]))
    ids_a = [p.id for p in load_problems(a)]
    assert ids_a == [p.id for p in load_problems(a)]
    assert ids_a == [p.id for p in load_problems(b)][::-1]
    assert ids_a[0] == "49477a7d65547072"  # pinned: the same problem, the same id, any run


def test_limit_is_explicit(tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    rows = [{"question": f"Q{i}", "answer": str(i)} for i in range(1500)]
    path.write_text(_jsonl(rows) + "not json\n")
    assert len(load_problems(path, limit=1500)) == 1500  # rows past the limit are not read
    assert [p.answer for p in load_problems(path, limit=3)] == ["0", "1", "2"]
    path.write_text(_jsonl(rows))
    assert len(load_problems(path)) == 1500  # no cap without a limit
    with pytest.raises(ValueError, match="limit must be >= 1"):
        load_problems(path, limit=0)


@pytest.mark.parametrize(("rows", "match"), [
    ([{"id": 1, "question": "a", "answer": "1"}, {"id": "x", "question": "b", "answer": "2"},
      {"id": "1", "question": "c", "answer": "3"}],
     r"dup\.jsonl, line 3, field 'id': duplicate id '1': also at line 1"),
    ([{"question": "same", "answer": "1"}, {"question": "same", "answer": "1"}],
     r"dup\.jsonl, line 2, field 'question': duplicate id '[0-9a-f]{16}' \(hashed from the "
     r"question: the same question twice\): also at line 1"),
])
def test_duplicate_ids_name_both_lines(tmp_path: Path, rows: list, match: str) -> None:
    path = tmp_path / "dup.jsonl"
    path.write_text(_jsonl(rows))
    with pytest.raises(DataError, match=match):
        load_problems(path)


GOOD = json.dumps({"question": "q", "answer": "#### 1"})
MALFORMED = [
    # (file name, content, format, message pattern: file, line / row index, field)
    ("a.jsonl", f"{GOOD}\n[1, 2]\n", "auto", r"a\.jsonl, line 2: a row must be a JSON object"),
    ("a.jsonl", f"{GOOD}\n\n{{\"question\": \n", "auto", r"a\.jsonl, line 3: invalid JSON"),
    ("a.jsonl", f"{GOOD}\n" + json.dumps({"question": "q2"}) + "\n", "auto",
     r"a\.jsonl, line 2, field 'answer': missing or empty"),
    ("a.jsonl", f"{GOOD}\n" + json.dumps({"answer": "#### 2"}) + "\n", "gsm8k",
     r"a\.jsonl, line 2, field 'question': missing or empty"),
    ("a.jsonl", f"{GOOD}\n" + json.dumps({"question": "q2", "answer": "2"}) + "\n", "auto",
     r"a\.jsonl, line 2, field 'answer': GSM8K answer has no '#### <answer>' line"),
    ("a.jsonl", f"{GOOD}\n" + json.dumps({"question": "q2", "answer": "x ####  "}) + "\n", "auto",
     r"a\.jsonl, line 2, field 'answer': GSM8K answer is empty after '####'"),
    ("a.jsonl", f"{GOOD}\n" + json.dumps({"question": 3, "answer": "#### 2"}) + "\n", "auto",
     r"a\.jsonl, line 2, field 'question': must be text, got int"),
    ("m.jsonl", _jsonl(MATH[:1] + [{"problem": "p", "solution": "it is 4"}]), "auto",
     r"m\.jsonl, line 2, field 'solution': solution has no \\boxed\{\} answer"),
    ("m.jsonl", _jsonl([{"problem": "p", "solution": r"\boxed{\frac{1}{2}"}]), "auto",
     r"m\.jsonl, line 1, field 'solution': the last \\boxed\{ has no closing brace"),
    ("m.jsonl", _jsonl([{"problem": "p", "solution": r"\boxed{ }"}]), "math",
     r"m\.jsonl, line 1, field 'solution': the last \\boxed\{\} is empty"),
    ("d.json", json.dumps([DEEPSCALER[0], {"problem": "p", "answer": None}]), "auto",
     r"d\.json, row index 1, field 'answer': missing or empty"),
    ("d.json", json.dumps([DEEPSCALER[0], "text"]), "auto",
     r"d\.json, row index 1: a row must be a JSON object, got str"),
    ("d.json", json.dumps({"data": [{"problem": "p", "answer": [1]}]}), "auto",
     r"d\.json, row index 0, field 'answer': must be text or a number, got list"),
    ("d.json", json.dumps([{"id": [1], "problem": "p", "answer": "1"}]), "auto",
     r"d\.json, row index 0, field 'id': an id must be text or an integer"),
    ("d.json", '[{"problem": "p",\n "answer": }]', "auto", r"d\.json, line 2: invalid JSON"),
    ("d.json", json.dumps({"items": []}), "auto",
     r"d\.json: a top-level object needs its rows as a list under 'data', 'rows', 'examples'"),
    ("d.json", json.dumps([{"text": "t", "label": 1}]), "auto",
     r"d\.json, row index 0: cannot tell the format from the fields \['label', 'text'\]"),
    ("e.jsonl", "\n\n", "auto", r"e\.jsonl: the file has no rows"),
    ("x.csv", "question,answer\n", "auto", r"x\.csv: unknown file type '\.csv'"),
]


@pytest.mark.parametrize(("name", "text", "fmt", "match"), MALFORMED,
                         ids=[m[-1].split(": ", 1)[-1][:40] for m in MALFORMED])
def test_malformed_rows_name_file_line_and_field(tmp_path: Path, name: str, text: str, fmt: str,
                                                 match: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError, match=match) as info:
        load_problems(path, format=fmt)
    assert str(path) in str(info.value)  # the full path, so the user finds the file


def test_missing_file_and_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.jsonl: data file not found"):
        load_problems(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="format must be one of"):
        load_problems(tmp_path / "nope.jsonl", format="csv")


@pytest.mark.parametrize(("text", "gold"), [
    (r"$\boxed{5}$", "5"),
    (r"$\boxed{1}$ then $\boxed{2}$", "2"),
    (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
    (r"\boxed{\left\{ x \right\}}", r"\left\{ x \right\}"),
    (r"\fbox{7} and earlier", "7"),
    (r"so \boxed 5$.", "5"),
    (r"\boxed {x^{2}}", "x^{2}"),
])
def test_last_boxed(text: str, gold: str) -> None:
    assert last_boxed(text) == gold


@pytest.mark.parametrize(("value", "level"), [
    ("Level 3", 3), ("level 5", 5), ("Level ?", UNKNOWN_LEVEL), ("hard", UNKNOWN_LEVEL),
    (4, 4), (2.6, 3), ("2", 2), (True, UNKNOWN_LEVEL), (float("nan"), UNKNOWN_LEVEL),
])
def test_parse_level(value, level: int) -> None:
    assert parse_level(value) == level
