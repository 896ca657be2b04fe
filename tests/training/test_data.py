"""Stage-2 prompts are built at read time: an updated M(q) reaches the next prompts."""

from __future__ import annotations

import pytest

from lapo import protocol as p
from lapo.task import generate
from lapo.training.data import build_stage2_prompt, prompt_mode, stage2_dataset
from lapo.training.rewards import LengthMemory, MemoryEntry


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_checkpoint)


def test_updated_memory_reaches_the_next_prompt(tokenizer) -> None:
    problems = generate("train", 4, seed=0, levels=(2,))
    memory = LengthMemory({prob.id: MemoryEntry(60, 5) for prob in problems})
    ds = stage2_dataset(problems, tokenizer, memory, seed=0, inject_share=1.0)
    row = ds[0]
    assert row["target"] == 60
    assert row["prompt"].endswith(p.THINK_OPEN + p.budget_statement(60))
    assert p.parse_budget(row["prompt"].split(p.THINK_OPEN)[-1]) == 60
    # Eq. 8 lowers M(q) during training ...
    memory.update_eq8(row["problem_id"], [30, 34, 38])
    # ... and the next read of that row carries the new target.
    again = ds[0]
    assert again["target"] == 34
    assert again["prompt"].endswith(p.budget_statement(34))


def test_self_mode_and_unsolved_problems_get_no_statement(tokenizer) -> None:
    problems = generate("train", 3, seed=0, levels=(1,))
    memory = LengthMemory()
    ds = stage2_dataset(problems, tokenizer, memory, seed=0, inject_share=1.0)
    for row in ds:
        assert row["target"] == -1 and row["prompt"].endswith(p.THINK_OPEN)


def test_prompt_mode_share_and_stability() -> None:
    ids = [f"arith-L1-{i:010x}" for i in range(2000)]
    modes = [prompt_mode(i, 0, 0.5) for i in ids]
    assert 0.45 < modes.count("inject") / len(modes) < 0.55
    assert modes == [prompt_mode(i, 0, 0.5) for i in ids]
    assert all(prompt_mode(i, 0, 0.0) == "self" for i in ids[:50])


def test_build_prompt_rounds_and_clamps() -> None:
    memory = LengthMemory({"q": MemoryEntry(0.2, 1)})
    prompt, target = build_stage2_prompt("P<think>", "inject", memory, "q")
    assert target == 1 and prompt == "P<think>" + p.budget_statement(1)
