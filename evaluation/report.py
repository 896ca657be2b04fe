"""Aggregating evaluation samples into REPORT.json, a markdown table and a PNG plot.

Pass@1 is the mean correctness over all k samples of all problems; its standard error is
over problems (each problem's mean over its k samples is one unit). Adherence (declared vs
actual) uses the protocol's budgeted length: Spearman rank correlation and the median of
|actual − declared| / declared, over samples that carry a declaration.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path

from lapo.evaluation.backends import Sample


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks with ties averaged (1-based)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for t in range(i, j + 1):
            ranks[order[t]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rho (Pearson on ranks); None when undefined (n < 2 or a constant side).

    >>> spearman([1, 2, 3], [10, 20, 30])
    1.0
    >>> spearman([1, 2, 3], [3, 2, 1])
    -1.0
    """
    if len(x) < 2:
        return None
    rx, ry = _ranks(x), _ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return None
    return round(sxy / (sxx * syy) ** 0.5, 4)


def _mean(values: Sequence[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


def standard_error(values: Sequence[float]) -> float | None:
    """The standard error of a mean over independent units (problems, not the samples of one
    problem); None under two units.

    >>> standard_error([0.0, 1.0, 0.5, 0.5])
    0.2041
    """
    if len(values) < 2:
        return None
    return round(statistics.stdev(values) / len(values) ** 0.5, 4)


def adherence(samples: Sequence[Sample]) -> dict | None:
    declared = [s for s in samples if s.declared is not None]
    if not declared:
        return None
    rel = [(s.budgeted_tokens - s.declared) / s.declared for s in declared]
    return {
        "samples": len(declared),
        "declared_share": round(len(declared) / len(samples), 4),
        "mean_declared_tokens": _mean([s.declared for s in declared]),
        "mean_actual_tokens": _mean([s.budgeted_tokens for s in declared]),
        "spearman": spearman([s.declared for s in declared],
                             [s.budgeted_tokens for s in declared]),
        "median_abs_relative_error": round(statistics.median(abs(e) for e in rel), 4),
        "median_relative_error": round(statistics.median(rel), 4),
    }


def summarize(samples: Sequence[Sample], settings: dict) -> dict:
    """The REPORT.json object."""
    per_level = []
    for level in sorted({s.level for s in samples}):
        group = [s for s in samples if s.level == level]
        per_level.append({
            "level": level,
            "samples": len(group),
            "accuracy": _mean([float(s.correct) for s in group]),
            "mean_completion_tokens": _mean([s.completion_tokens for s in group]),
            "mean_reasoning_tokens": _mean([s.reasoning_tokens for s in group]),
            "mean_budgeted_tokens": _mean([s.budgeted_tokens for s in group]),
        })
    correct = [s for s in samples if s.correct]
    per_problem = {}
    for item_id in sorted({s.item_id for s in samples}):
        group = [s for s in samples if s.item_id == item_id]
        declared = [s.declared for s in group if s.declared is not None]
        per_problem[item_id] = {
            "level": group[0].level,
            "accuracy": _mean([float(s.correct) for s in group]),
            "mean_reasoning_tokens": _mean([s.reasoning_tokens for s in group]),
            "mean_declared": _mean(declared),
        }
    return {
        "accuracy": _mean([float(s.correct) for s in samples]),
        # over problems: each problem's k samples are one unit (they are not independent)
        "accuracy_se": standard_error([p["accuracy"] for p in per_problem.values()]),
        "mean_completion_tokens": _mean([s.completion_tokens for s in samples]),
        "mean_reasoning_tokens": _mean([s.reasoning_tokens for s in samples]),
        "mean_budgeted_tokens": _mean([s.budgeted_tokens for s in samples]),
        "mean_reasoning_tokens_correct": _mean([s.reasoning_tokens for s in correct]),
        "truncated_share": _mean([float(s.finish_reason == "length") for s in samples]),
        "problems": len({s.item_id for s in samples}),
        "samples": len(samples),
        "per_level": per_level,
        "adherence": adherence(samples),
        "settings": settings,
        "per_problem": per_problem,
    }


def markdown(report: dict, title: str = "Evaluation") -> str:
    lines = [
        f"# {title}",
        "",
        f"Pass@1 **{report['accuracy']}**, mean reasoning tokens "
        f"**{report['mean_reasoning_tokens']}**, mean completion tokens "
        f"{report['mean_completion_tokens']} ({report['problems']} problems x "
        f"{report['settings'].get('k')} samples).",
        "",
        "| level | samples | Pass@1 | mean reasoning tokens | mean completion tokens |",
        "|---|---|---|---|---|",
    ]
    for row in report["per_level"]:
        lines.append(f"| {row['level']} | {row['samples']} | {row['accuracy']} | "
                     f"{row['mean_reasoning_tokens']} | {row['mean_completion_tokens']} |")
    adh = report["adherence"]
    if adh:
        lines += ["", f"Declared vs actual ({adh['samples']} samples): Spearman "
                      f"{adh['spearman']}, median |relative error| "
                      f"{adh['median_abs_relative_error']}."]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path, title: str = "") -> None:
    """Tokens and accuracy against difficulty (the paper's Figure 3, at our scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [r["level"] for r in report["per_level"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(levels, [r["mean_reasoning_tokens"] for r in report["per_level"]], "o-",
            color="tab:blue", label="mean reasoning tokens")
    ax.set_xlabel("difficulty level")
    ax.set_ylabel("reasoning tokens", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(levels, [r["accuracy"] for r in report["per_level"]], "s--", color="tab:red",
             label="Pass@1")
    ax2.set_ylabel("Pass@1", color="tab:red")
    ax2.set_ylim(0, 1.05)
    ax.set_title(title or "tokens and accuracy by difficulty")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(report: dict, out: Path, title: str = "Evaluation") -> None:
    """REPORT.json, plus REPORT.md and REPORT.png beside it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report, title))
    plot(report, out.with_suffix(".png"), title)
