"""LAPO rewards: formulas, one reward per sample, M(q) keyed by problem id, Eq. 8."""

from __future__ import annotations

import threading

import pytest

from lapo import protocol as p
from lapo.think import ThinkProfile, TokenCounter
from lapo.training.rewards import (
    LengthMemory,
    MemoryEntry,
    Stage1Reward,
    Stage2Reward,
    gaussian,
    percentile,
    range_reward,
)


class CharTokenizer:
    """One token per character, with the tags as single tokens (enough for counting)."""

    SPECIAL = {"<think>": 1000, "</think>": 1001}
    eos_token_id = 1002

    def convert_tokens_to_ids(self, tok):
        return self.SPECIAL[tok]

    def encode(self, text: str) -> list[int]:
        ids, i = [], 0
        while i < len(text):
            for tag, tid in self.SPECIAL.items():
                if text.startswith(tag, i):
                    ids.append(tid)
                    i += len(tag)
                    break
            else:
                ids.append(ord(text[i]))
                i += 1
        return ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        inv = {v: k for k, v in self.SPECIAL.items()}
        return "".join(inv.get(i, "" if i == self.eos_token_id else chr(i)) for i in ids)


TOK = CharTokenizer()


def _counter():
    # The project's own kind of checkpoint: the template opens <think>; tags are tokens.
    return TokenCounter(TOK, ThinkProfile("prompt", "token", (1000,), (1001,)))


def _batch(specs):
    """specs: (problem_id, gold, reasoning_len, answer)."""
    completions, ids, pids, golds = [], [], [], []
    for pid, gold, n, answer in specs:
        text = "x" * n + "</think>" + answer
        completions.append(text)
        ids.append(TOK.encode(text) + [TOK.eos_token_id])
        pids.append(pid)
        golds.append(gold)
    return completions, ids, pids, golds


@pytest.mark.parametrize(
    ("length", "lo", "hi", "expected"),
    [(25, 20, 30, 1.0), (20, 20, 30, 1.0), (30, 20, 30, 1.0), (10, 20, 30, 0.9),
     (40, 20, 30, 0.9), (130, 20, 30, 0.0), (500, 20, 30, 0.0)],
)
def test_range_reward(length, lo, hi, expected) -> None:
    assert range_reward(length, lo, hi) == pytest.approx(expected)


def test_percentile_matches_numpy() -> None:
    np = pytest.importorskip("numpy")
    xs = [3, 9, 1, 14, 7, 7, 22]
    for q in (0, 30, 50, 70, 100):
        assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))


def test_stage1_reward_formula_and_memory() -> None:
    memory = LengthMemory()
    reward = Stage1Reward(_counter(), memory, alpha=0.7)
    # Problem a: correct lengths 10, 20, 30, 40, 200 -> P30 = 22, P70 = 38; one wrong.
    specs = [("a", "7", n, "7") for n in (10, 20, 30, 40, 200)] + [("a", "7", 25, "8")]
    # Problem b: a single correct rollout; c: unsolved.
    specs += [("b", "3", 50, "3"), ("b", "3", 60, "4"), ("c", "1", 5, "2"), ("c", "1", 9, "2")]
    completions, ids, pids, golds = _batch(specs)
    got = reward(prompts=["p"] * len(specs), completions=completions, completion_ids=ids,
                 problem_id=pids, answer=golds)
    assert len(got) == len(specs)  # exactly one reward per sample
    lo, hi = percentile([10, 20, 30, 40, 200], 30), percentile([10, 20, 30, 40, 200], 70)
    expected_a = [1 + 0.7 * range_reward(n, lo, hi) for n in (10, 20, 30, 40, 200)] + [0.0]
    assert got[:6] == pytest.approx(expected_a)
    assert got[1] < got[2] == pytest.approx(1.7)  # inside the range beats outside
    assert got[4] == pytest.approx(1.0)  # far too long: correctness only
    assert got[6:] == pytest.approx([1.7, 0.0, 0.0, 0.0])  # < 2 correct: R1 neutral
    # M(q): median of correct lengths, keyed by problem id, with its sample count.
    assert memory.get("a") == MemoryEntry(30, 5)
    assert memory.get("b") == MemoryEntry(50, 1)
    assert memory.get("c") is None  # unsolved: no entry, not a magic number


def test_stage1_counts_budgeted_length_after_a_statement() -> None:
    memory = LengthMemory()
    text = p.budget_statement(12)[1:] + "x" * 12 + "</think>7"
    Stage1Reward(_counter(), memory)(prompts=["p"], completions=[text],
                                     completion_ids=[TOK.encode(text)], problem_id=["a"],
                                     answer=["7"])
    assert memory.get("a") == MemoryEntry(12, 1)


def test_stage2_injected_budget_gaussian_and_eq8() -> None:
    memory = LengthMemory({"a": MemoryEntry(40, 4)})
    reward = Stage2Reward(_counter(), memory, beta=0.8, sigma_frac=0.25)
    specs = [("a", "7", 40, "7"), ("a", "7", 50, "7"), ("a", "7", 20, "7"), ("a", "7", 40, "9")]
    completions, ids, pids, golds = _batch(specs)
    got = reward(prompts=["p"] * 4, completions=completions, completion_ids=ids,
                 problem_id=pids, answer=golds, target=[40] * 4)
    sigma = 0.25 * 40
    assert got == pytest.approx([1.8, 1 + 0.8 * gaussian(10, sigma),
                                 1 + 0.8 * gaussian(-20, sigma), 0.0])
    # Eq. 8: solved -> min(M(q), median of correct lengths) = min(40, 40) = 40.
    assert memory.get("a").median == 40


@pytest.mark.parametrize(
    ("before", "lengths", "after"),
    [(None, [30, 50, 70], 50), (MemoryEntry(40, 3), [30, 50, 70], 40),
     (MemoryEntry(60, 3), [30, 50, 70], 50), (MemoryEntry(60, 3), [], 60)],
)
def test_eq8_update(before, lengths, after) -> None:
    memory = LengthMemory({"q": before} if before else {})
    memory.update_eq8("q", lengths)
    assert memory.get("q").median == after


def test_stage2_self_declared_rewards_honesty_and_efficiency() -> None:
    memory = LengthMemory({"a": MemoryEntry(40, 4)})
    reward = Stage2Reward(_counter(), memory, beta=0.8, sigma_frac=0.25)
    texts = [p.budget_statement(40)[1:] + "x" * 40 + "</think>7",  # honest and efficient
             p.budget_statement(80)[1:] + "x" * 80 + "</think>7",  # honest, not efficient
             p.budget_statement(40)[1:] + "x" * 80 + "</think>7",  # efficient claim, not honest
             "x" * 40 + "</think>7"]  # no statement: no length bonus
    got = reward(prompts=["p"] * 4, completions=texts,
                 completion_ids=[TOK.encode(t) for t in texts], problem_id=["a"] * 4,
                 answer=["7"] * 4, target=[-1] * 4)
    assert got[0] == pytest.approx(1.8)
    assert got[0] > got[1] > 1.0 and got[0] > got[2] > 1.0
    assert got[3] == pytest.approx(1.0)


def test_stage2_self_declared_plan_below_memory_is_not_pulled_up() -> None:
    memory = LengthMemory({"a": MemoryEntry(40, 4)})
    reward = Stage2Reward(_counter(), memory, beta=0.8, sigma_frac=0.25)
    texts = [p.budget_statement(n)[1:] + "x" * n + "</think>7" for n in (20, 40, 60)]
    got = reward(prompts=["p"] * 3, completions=texts,
                 completion_ids=[TOK.encode(t) for t in texts], problem_id=["a"] * 3,
                 answer=["7"] * 3, target=[-1] * 3)
    # Honest and at most M(q): full bonus, shorter or not; above M(q): less.
    assert got[0] == pytest.approx(1.8) and got[1] == pytest.approx(1.8)
    assert got[2] == pytest.approx(1.0 + 0.8 * (0.5 + 0.5 * gaussian(20, 10)))


def test_memory_json_round_trip() -> None:
    memory = LengthMemory()
    memory.record("a", [10, 20, 30])
    again = LengthMemory.from_json(memory.to_json())
    assert again.get("a") == MemoryEntry(20, 3) and len(again) == 1


def _split_specs():
    """A generation batch of 3 groups of G = 4, cut in the middle of a group (as TRL's rank
    slices can be): correct lengths vary, one group unsolved, stage-2 targets mixed."""
    specs = [("a", "7", n, "7") for n in (10, 20, 30, 90)]
    specs += [("b", "3", 50, "3"), ("b", "3", 70, "3"), ("b", "3", 60, "4"), ("b", "3", 40, "3")]
    specs += [("c", "1", 5, "2")] * 4
    return specs


def _run_as_ranks(make_reward, specs, cuts, **columns) -> tuple[list[list[float]], list]:
    """Call one reward per rank (threads) on its slice of ``specs``, exchanging through a
    barrier as the process group would; returns each rank's rewards and reward object."""
    world = len(cuts) - 1
    parts: list = [None] * world
    gate = threading.Barrier(world, timeout=30)

    def exchange_for(rank):
        def exchange(local):
            parts[rank] = local
            gate.wait()
            everything = [x for part in parts for x in part]
            offset = sum(len(p) for p in parts[:rank])
            gate.wait()  # nobody overwrites parts before everyone has read them
            return everything, offset
        return exchange

    objects = [make_reward(exchange_for(rank)) for rank in range(world)]
    results: list = [None] * world

    def work(rank):
        lo, hi = cuts[rank], cuts[rank + 1]
        completions, ids, pids, golds = _batch(specs[lo:hi])
        cols = {k: v[lo:hi] for k, v in columns.items()}
        results[rank] = objects[rank](prompts=["p"] * (hi - lo), completions=completions,
                                      completion_ids=ids, problem_id=pids, answer=golds, **cols)

    threads = [threading.Thread(target=work, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, objects


@pytest.mark.parametrize("cuts", [(0, 6, 12), (0, 4, 8, 12), (0, 12)],
                         ids=["2 ranks, group split", "3 ranks, whole groups", "1 rank"])
def test_stage1_over_ranks_equals_one_process(cuts) -> None:
    specs = _split_specs()
    completions, ids, pids, golds = _batch(specs)
    alone = LengthMemory()
    expected = Stage1Reward(_counter(), alone)(prompts=["p"] * 12, completions=completions,
                                               completion_ids=ids, problem_id=pids,
                                               answer=golds)
    rewards, objects = _run_as_ranks(lambda ex: Stage1Reward(_counter(), LengthMemory(),
                                                             exchange=ex), specs, cuts)
    assert [r for part in rewards for r in part] == pytest.approx(expected)
    # One-process value of an item whose group the 2-rank cut splits (P30-P70 of all four).
    assert expected[3] < 1.7
    for reward in objects:  # every rank holds the one-process M(q)
        assert reward.memory.to_json() == alone.to_json()
        assert reward.memory.digest() == alone.digest()


@pytest.mark.parametrize("cuts", [(0, 6, 12), (0, 3, 9, 12)])
def test_stage2_over_ranks_equals_one_process(cuts) -> None:
    specs = _split_specs()
    target = [40, 40, -1, -1, 60, 60, 60, -1, -1, -1, 5, 5]
    start = {"a": MemoryEntry(40, 4), "b": MemoryEntry(60, 3)}
    completions, ids, pids, golds = _batch(specs)
    alone = LengthMemory(start)
    expected = Stage2Reward(_counter(), alone)(prompts=["p"] * 12, completions=completions,
                                               completion_ids=ids, problem_id=pids,
                                               answer=golds, target=target)
    rewards, objects = _run_as_ranks(
        lambda ex: Stage2Reward(_counter(), LengthMemory(start), exchange=ex), specs, cuts,
        target=target)
    assert [r for part in rewards for r in part] == pytest.approx(expected)
    assert alone.get("a").median == 25  # Eq. 8 over the whole group: min(40, 25)
    for reward in objects:
        assert reward.memory.to_json() == alone.to_json()
