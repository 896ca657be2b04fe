"""Warm-up helpers: filling M(q) from the stage-1 model's rollouts keeps stage 1's entries."""

from __future__ import annotations

from training.rewards import LengthMemory, MemoryEntry
from training.warmup import fill_memory


def test_fill_memory_adds_only_missing_problems() -> None:
    memory = LengthMemory({"a": MemoryEntry(50, 4)})
    added = fill_memory(memory, {"a": [10, 20], "b": [30, 40, 50], "c": []})
    assert added == 1
    assert memory.get("a") == MemoryEntry(50, 4)  # stage 1's measurement stays
    assert memory.get("b") == MemoryEntry(40, 3)
    assert memory.get("c") is None  # still unsolved: no entry
