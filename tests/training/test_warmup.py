"""Warm-up helpers: which rollouts become which rows; filling M(q) keeps stage 1's entries."""

from __future__ import annotations

from lapo import protocol as p
from lapo.training.rewards import LengthMemory, MemoryEntry
from lapo.training.warmup import fill_memory, warmup_rows


def test_warmup_rows_label_each_rollout_with_its_own_length() -> None:
    good = [(30, "long"), (10, "short"), (20, "mid")]
    every = [10, 20, 30, 40, 50, 60]  # with three wrong rollouts: P30 = 25
    rows = warmup_rows("<think>", good, every, inject_percentile=100, self_percentile=15)
    injected = [r for r, k in rows if k == "inject"]
    declared = [r for r, k in rows if k == "self"]
    # Every correct rollout teaches what an injected number means ...
    assert sorted(r["completion"] for r in injected) == ["long", "mid", "short"]
    assert {r["prompt"] for r in injected if r["completion"] == "long"} == {
        "<think>" + p.budget_statement(30)}
    # ... and only the efficient end (<= P15 of all = 17.5) is what it declares on its own.
    assert declared == [{"prompt": "<think>", "completion": p.budget_statement(10) + "short"}]
    for r in declared:
        assert p.parse_budget(r["completion"]) == 10


def test_warmup_rows_percentiles_select() -> None:
    good = [(n, str(n)) for n in (10, 20, 30, 40, 50)]
    rows = warmup_rows("", good, [n for n, _ in good], inject_percentile=70,
                       self_percentile=0)
    # P70 of the correct lengths = 38; P0 of all of them = 10.
    assert sorted(r["completion"] for r, k in rows if k == "inject") == ["10", "20", "30"]
    assert [r["completion"] for r, k in rows if k == "self"] == [p.budget_statement(10) + "10"]


def test_fill_memory_adds_only_missing_problems() -> None:
    memory = LengthMemory({"a": MemoryEntry(50, 4)})
    added = fill_memory(memory, {"a": [10, 20], "b": [30, 40, 50], "c": []})
    assert added == 1
    assert memory.get("a") == MemoryEntry(50, 4)  # stage 1's measurement stays
    assert memory.get("b") == MemoryEntry(40, 3)
    assert memory.get("c") is None  # still unsolved: no entry
