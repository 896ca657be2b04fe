"""Budget decisions without HTTP or engine."""

from __future__ import annotations

import pytest

from lapo.service.budget import hard_cap, plan_budget, scale

FACTORS = {"low": 0.5, "medium": 1.0, "high": 1.5}


@pytest.mark.parametrize(
    ("budget", "effort", "enforcement", "mode", "injected", "factor", "hard"),
    [
        (None, None, "soft", "auto", None, None, False),
        (40, None, "soft", "request", 40, None, False),
        (40, "low", "hard", "request", 40, None, True),  # an explicit budget wins
        (None, "low", "soft", "effort", None, 0.5, False),
        (None, "high", "hard", "effort", None, 1.5, True),
        (None, None, "hard", "auto", None, None, True),
    ],
)
def test_plan(budget, effort, enforcement, mode, injected, factor, hard) -> None:
    plan = plan_budget(budget, effort, enforcement, FACTORS)
    assert (plan.mode, plan.injected, plan.effort_factor, plan.hard) == (
        mode, injected, factor, hard)


@pytest.mark.parametrize(("declared", "factor", "expected"),
                         [(40, 0.5, 20), (40, 1.5, 60), (1, 0.5, 1), (131072, 1.5, 131072)])
def test_scale(declared, factor, expected) -> None:
    assert scale(declared, factor) == expected


def test_hard_cap() -> None:
    assert hard_cap(40, 0.25, 8) == 58
    assert hard_cap(1, 0.0, 0) == 1
