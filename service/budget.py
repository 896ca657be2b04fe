"""Budget decisions: where a request's reasoning budget comes from, and the hard cap.

Modes (highest precedence first):

- ``reasoning_budget: N`` (request): the statement with N is injected after ``<think>``.
- ``reasoning_effort`` (effort): the model first writes its own statement; the service scales
  the number by the effort factor (low 0.5, medium 1.0, high 1.5 by default) and the model
  continues from the scaled statement (prefix caching keeps the re-prefill cheap).
- default (auto): the model declares its own budget; the service only reads it
  (source ``model``, or ``none`` when it wrote no statement).

``budget_enforcement: "hard"`` caps the reasoning at ``ceil(N * (1 + slack_ratio)) +
slack_tokens`` budgeted tokens; past it the service forces ``</think>`` and lets the model
answer. ``max_completion_tokens`` always caps the total.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from lapo import protocol as p

Source = Literal["model", "request", "effort", "none"]


@dataclass(frozen=True)
class BudgetLimits:
    """Service-wide budget settings (the defaults of ``LAPO_HARD_SLACK_RATIO``,
    ``LAPO_HARD_SLACK_TOKENS``, ``LAPO_STATEMENT_MAX_TOKENS``: defined here only)."""

    # Hard cap: reasoning may run to budget * (1 + slack_ratio) + slack_tokens before
    # </think> is forced.
    hard_slack_ratio: float = 0.25
    hard_slack_tokens: int = 8
    # Tokens the model may spend writing its own statement (effort mode's first phase).
    statement_max_tokens: int = 24


@dataclass(frozen=True)
class BudgetPlan:
    mode: Literal["auto", "request", "effort"]
    injected: int | None = None  # request mode: the N placed in the prompt
    effort_factor: float | None = None
    hard: bool = False


def plan_budget(reasoning_budget: int | None, reasoning_effort: str | None,
                enforcement: str, effort_factors: dict[str, float]) -> BudgetPlan:
    hard = enforcement == "hard"
    if reasoning_budget is not None:
        return BudgetPlan("request", injected=reasoning_budget, hard=hard)
    if reasoning_effort is not None:
        return BudgetPlan("effort", effort_factor=effort_factors[reasoning_effort], hard=hard)
    return BudgetPlan("auto", hard=hard)


def scale(declared: int, factor: float) -> int:
    """The effort-scaled budget, kept inside the protocol's range.

    >>> scale(40, 0.5), scale(40, 1.5), scale(1, 0.5)
    (20, 60, 1)
    """
    return min(p.MAX_BUDGET, max(p.MIN_BUDGET, round(declared * factor)))


def hard_cap(budget: int, slack_ratio: float, slack_tokens: int) -> int:
    """Budgeted reasoning tokens allowed before </think> is forced.

    >>> hard_cap(40, 0.25, 8)
    58
    """
    return math.ceil(budget * (1.0 + slack_ratio)) + slack_tokens
