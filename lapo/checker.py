"""The one answer checker, used by the rewards (stage 1 and 2) and by `lapo eval` alike.

A completion is correct when its answer states the gold answer. Where the answer is comes
from the checkpoint's think profile (`lapo.think`): after ``</think>`` for a reasoning model
(whose span must be closed), the whole completion for a model without a think span.

- synthetic task: the last integer in the answer equals the gold integer (exact);
- math benchmarks (MATH500, AIME): ``math-verify`` compares the parsed answer (``\\boxed{}``
  preferred) with the gold. Its default timeout uses ``signal.alarm``, which raises outside the
  main thread, so it is called with timeouts off and the answer text is bounded instead;
- reasoning-gym tasks: the task's own ``score_answer`` (`lapo.rgym`, checker ``reasoning_gym``).
"""

from __future__ import annotations

import re

from lapo import rgym
from lapo.think import LAPO_DEFAULT, ThinkProfile

_INT_RE = re.compile(r"-?\d+")
_MAX_ANSWER_CHARS = 2000


def extract_int(answer: str) -> int | None:
    """The last integer in ``answer``, or None.

    >>> extract_int("The final number is 32.")
    32
    >>> extract_int("no number") is None
    True
    """
    found = _INT_RE.findall(answer)
    return int(found[-1]) if found else None


def check_exact(gold: str, completion: str, profile: ThinkProfile = LAPO_DEFAULT,
                budget_in_prompt: bool = False) -> bool:
    """Synthetic task: the answer's last integer equals ``gold``."""
    answer = profile.answer(completion, budget_in_prompt)
    if answer is None:
        return False
    got = extract_int(answer[:_MAX_ANSWER_CHARS])
    return got is not None and str(got) == gold.strip()


def check_math(gold: str, completion: str, profile: ThinkProfile = LAPO_DEFAULT,
               budget_in_prompt: bool = False) -> bool:
    """Math benchmarks: math-verify on the answer span (thread-safe: no signal timeouts)."""
    answer = profile.answer(completion, budget_in_prompt)
    if answer is None:
        return False
    from math_verify import parse, verify

    try:
        gold_parsed = parse(f"${gold.strip().strip('$')}$", parsing_timeout=None)
        pred = parse(answer[-_MAX_ANSWER_CHARS:], parsing_timeout=None)
        return bool(verify(gold_parsed, pred, timeout_seconds=None))
    except Exception:  # math-verify raises on malformed LaTeX: a wrong answer, not a crash
        return False


def check(gold: str, completion: str, kind: str = "exact",
          profile: ThinkProfile = LAPO_DEFAULT, budget_in_prompt: bool = False) -> bool:
    """Dispatch on the data set's checker kind ('exact', 'math' or 'reasoning_gym')."""
    if kind == "exact":
        return check_exact(gold, completion, profile, budget_in_prompt)
    if kind == "math":
        return check_math(gold, completion, profile, budget_in_prompt)
    if kind == "reasoning_gym":
        return rgym.check(gold, completion, profile, budget_in_prompt)
    raise ValueError(f"unknown checker kind {kind!r}")
