"""reasoning-gym tasks: levels, disjoint splits, stable ids, the tasks' own verifiers."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("reasoning_gym")

from lapo import rgym  # noqa: E402
from lapo.checker import check  # noqa: E402
from lapo.evaluation.data import load_items  # noqa: E402
from lapo.think import LAPO_DEFAULT, ThinkProfile  # noqa: E402
from lapo.training.train_data import load_train_problems  # noqa: E402

SPEC = "reasoning_gym:chain_sum+basic_arithmetic"
PLAIN = ThinkProfile("none", "none")  # no think span (SmolLM2-Instruct)


@pytest.mark.parametrize("task", sorted(rgym.LEVELS))
def test_levels_are_three_or_more_disjoint_and_grow_longer(task) -> None:
    levels = rgym.LEVELS[task]
    assert sorted(levels) == list(range(1, len(levels) + 1)) and len(levels) >= 3
    params = [levels[lvl] for lvl in sorted(levels)]
    assert len({json.dumps(p, sort_keys=True) for p in params}) == len(params)
    questions, mean_len = [], []
    for lvl in sorted(levels):
        probs = rgym.load(f"reasoning_gym:{task}", "train", 200)[(lvl - 1) * 200:lvl * 200]
        assert {p.level for p in probs} == {lvl}
        questions.append({p.question for p in probs})
        exprs = [json.loads(p.answer)["entry"]["metadata"]["expression"] for p in probs]
        mean_len.append(sum(map(len, exprs)) / len(exprs))
    assert mean_len == sorted(mean_len) and len(set(mean_len)) == len(mean_len)
    for i, qs in enumerate(questions):
        for other in questions[i + 1:]:
            assert not qs & other


def test_each_level_generates_with_its_own_params() -> None:
    for prob in rgym.load(SPEC, "train", 3, seed=0):
        g = json.loads(prob.answer)
        kw = rgym.LEVELS[g["task"]][prob.level]
        assert g["level"] == prob.level
        assert kw["min_terms"] <= g["entry"]["metadata"]["num_terms"] <= kw["max_terms"]


def test_train_and_heldout_are_disjoint() -> None:
    train = rgym.load(SPEC, "train", 300, seed=0)
    held = rgym.load(SPEC, "heldout", 100, seed=0)
    assert len(train) == 300 * 6 and len(held) == 100 * 6
    assert not {p.id for p in train} & {p.id for p in held}
    assert not {p.question for p in train} & {p.question for p in held}
    # Whatever the seeds: the split is a property of the question text.
    other = rgym.load(SPEC, "heldout", 100, seed=7)
    assert not {p.question for p in train} & {p.question for p in other}
    assert len({p.question for p in held}) == len(held)  # each question once


def test_ids_are_stable_and_named_by_task_level_split() -> None:
    a = rgym.load(SPEC, "heldout", 5, seed=3)
    b = rgym.load(SPEC, "heldout", 5, seed=3)
    assert a == b
    assert a[0].id == "rg-chain_sum-L1-heldout-0"
    assert {p.id.rsplit("-", 1)[0] for p in a} == {
        f"rg-{t}-L{lvl}-heldout" for t in rgym.LEVELS for lvl in (1, 2, 3)}


@pytest.mark.parametrize("task", sorted(rgym.LEVELS))
def test_the_tasks_verifier_scores_right_and_wrong(task) -> None:
    for prob in rgym.load(f"reasoning_gym:{task}", "heldout", 4, seed=0):
        gold = json.loads(prob.answer)["entry"]["answer"]
        wrong = str(int(gold) + 1)

        def ok(text: str, profile=PLAIN, gold_json: str = prob.answer) -> bool:
            return check(gold_json, text, "reasoning_gym", profile)

        assert ok(f"Add them up.\nAnswer: {gold}") and ok(f"The result is **{gold}**")
        assert not ok(f"Answer: {wrong}") and not ok("I do not know.")
        # score_answer's partial credit (gold inside a longer answer) is not correct.
        assert not ok(f"Answer: {gold} or {wrong}")
        # A reasoning model: the answer after </think>; an unclosed span is wrong.
        assert ok(f"Answer: {wrong}, no...</think>Answer: {gold}", LAPO_DEFAULT)
        assert not ok(f"Answer: {gold}", LAPO_DEFAULT)


@pytest.mark.parametrize(("text", "want"), [
    ("Answer: 7", "7"),
    ("answer:  -12.\nmore text", "-12"),
    ("Answer: 3\n... Answer: **5**", "5"),
    ("4 + 1 = 5, so 5", "5"),
    ("Answer:", None),
    ("no digits", None),
])
def test_extract_answer(text, want) -> None:
    assert rgym.extract_answer(text) == want


@pytest.mark.parametrize(("spec", "match"), [
    ("reasoning_gym:chain_summ", r"unknown reasoning-gym task 'chain_summ'.*basic_arithmetic"),
    ("reasoning_gym:chain_sum+", "empty task name"),
    ("reasoning_gym:", "empty task name"),
])
def test_a_bad_spec_names_the_task_and_the_known_ones(spec, match) -> None:
    with pytest.raises(ValueError, match=match):
        rgym.parse_spec(spec)
    with pytest.raises(ValueError, match=match):
        load_items(spec)


def test_training_reads_the_train_split() -> None:
    problems = load_train_problems(SPEC, per_level=4, seed=1)
    assert len(problems) == 4 * 6
    assert {p.checker for p in problems} == {"reasoning_gym"}
    assert {p.level for p in problems} == {1, 2, 3}
    assert all("-train-" in p.id for p in problems)
    assert "Answer:" in problems[0].messages()[0]["content"]
    assert [p.id for p in problems] == [p.id for p in load_train_problems(SPEC, 4, 1)]
    assert len(load_train_problems("reasoning_gym:chain_sum", 0, 1)) == 3 * rgym.DEFAULT_PER_LEVEL


def test_evaluation_reads_the_heldout_split() -> None:
    items = load_items(SPEC, per_level=3)
    assert len(items) == 3 * 6 and len(load_items(SPEC, limit=5, per_level=3)) == 5
    assert {i.checker for i in items} == {"reasoning_gym"}
    assert {i.level for i in items} == {1, 2, 3}
    assert all("-heldout-" in i.id for i in items)
    gold = json.loads(items[0].gold)["entry"]["answer"]
    assert check(items[0].gold, f"</think>Answer: {gold}", items[0].checker)


def test_too_many_problems_for_a_level_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setitem(rgym.LEVELS, "chain_sum", {
        1: {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}})
    with pytest.raises(ValueError, match="chain_sum level 1 has only .* distinct heldout"):
        rgym.load("reasoning_gym:chain_sum", "heldout", 500)
