"""Report aggregation: Pass@1, per-level rows, adherence, files."""

from __future__ import annotations

import json

import pytest

from lapo.evaluation.backends import Sample
from lapo.evaluation.report import spearman, summarize, write


def _s(item, level, correct, reasoning, declared=None, budgeted=None):
    b = reasoning if budgeted is None else budgeted
    return Sample(item, level, correct, reasoning + 5, reasoning, b, declared, "stop")


def test_summary_and_levels() -> None:
    samples = [_s("a", 1, True, 10), _s("a", 1, False, 30), _s("b", 2, True, 50),
               _s("b", 2, True, 70)]
    rep = summarize(samples, {"k": 2})
    assert rep["accuracy"] == 0.75
    assert rep["mean_reasoning_tokens"] == 40
    assert rep["mean_completion_tokens"] == 45
    assert rep["per_level"] == [
        {"level": 1, "samples": 2, "accuracy": 0.5, "mean_completion_tokens": 25,
         "mean_reasoning_tokens": 20, "mean_budgeted_tokens": 20},
        {"level": 2, "samples": 2, "accuracy": 1.0, "mean_completion_tokens": 65,
         "mean_reasoning_tokens": 60, "mean_budgeted_tokens": 60},
    ]
    assert rep["adherence"] is None  # nothing declared


def test_adherence() -> None:
    samples = [_s("a", 1, True, 30, declared=10, budgeted=11),
               _s("b", 1, True, 40, declared=20, budgeted=18),
               _s("c", 1, True, 50, declared=40, budgeted=44),
               _s("d", 1, True, 9)]
    adh = summarize(samples, {"k": 1})["adherence"]
    assert adh["samples"] == 3 and adh["declared_share"] == 0.75
    assert adh["spearman"] == 1.0
    assert adh["median_abs_relative_error"] == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("x", "y", "rho"),
    [([1, 2, 3, 4], [1, 3, 2, 4], 0.8), ([1, 1, 2], [1, 2, 3], 0.866), ([1], [1], None),
     ([2, 2, 2], [1, 2, 3], None)],
)
def test_spearman(x, y, rho) -> None:
    got = spearman(x, y)
    assert got == (None if rho is None else pytest.approx(rho, abs=1e-3))


def test_write_files(tmp_path) -> None:
    out = tmp_path / "r" / "REPORT.json"
    write(summarize([_s("a", 1, True, 10), _s("b", 2, False, 20)], {"k": 1}), out)
    data = json.loads(out.read_text())
    for key in ("accuracy", "mean_completion_tokens", "mean_reasoning_tokens", "per_level",
                "adherence", "settings"):
        assert key in data
    assert out.with_suffix(".md").read_text().startswith("# ")
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_standard_errors_are_over_problems_and_paired() -> None:
    from lapo.training.results import compare

    # Two problems x 2 samples: per-problem accuracies 0.5 and 1.0 -> SE = stdev/sqrt(2).
    base = summarize([_s("a", 1, True, 10), _s("a", 1, False, 30), _s("b", 2, True, 50),
                      _s("b", 2, True, 70)], {"k": 2})
    assert base["accuracy_se"] == 0.25  # stdev(0.5, 1.0) = 0.3536, / sqrt(2)
    # A model right on every sample of "a", wrong on "b": per-problem changes +0.5 and -1.0.
    lapo = summarize([_s("a", 1, True, 10), _s("a", 1, True, 10), _s("b", 2, False, 50),
                      _s("b", 2, False, 50)], {"k": 2})
    row = compare({"base": base, "lapo": lapo})["lapo"]
    assert row["accuracy_change_points"] == -25.0
    assert row["accuracy_change_se_points"] == 75.0  # stdev(0.5, -1.0) / sqrt(2) = 0.75
    assert compare({"base": base})["base"]["accuracy_change_se_points"] == 0.0
