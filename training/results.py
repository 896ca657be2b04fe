"""The pipeline's results: base vs stage 1 vs stage 2 on the same held-out problems.

Also derives the checkpoint's ``baseline_profile``: the base model's mean reasoning tokens on
held-out problems, bucketed by the number the LAPO model declares for the same problems. The
service uses it to ESTIMATE tokens saved per request (method ``profile``).
"""

from __future__ import annotations

import statistics
from pathlib import Path

from lapo.evaluation.report import standard_error

# Upper edges (tokens) of the declared-budget buckets; the last bucket is open.
PROFILE_EDGES = (16, 32, 48, 64, 96, 128, 192, 256, 384, 512)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def compare(reports: dict[str, dict]) -> dict:
    base = reports["base"]
    out = {}
    for name, rep in reports.items():
        out[name] = {
            "accuracy": rep["accuracy"],
            "mean_reasoning_tokens": rep["mean_reasoning_tokens"],
            "token_ratio_vs_base": _ratio(rep["mean_reasoning_tokens"],
                                          base["mean_reasoning_tokens"]),
            "accuracy_change_points": round(100 * (rep["accuracy"] - base["accuracy"]), 2),
            "accuracy_change_se_points": _paired_se_points(rep, base),
            "per_level": [{k: row[k] for k in ("level", "accuracy", "mean_reasoning_tokens")}
                          for row in rep["per_level"]],
            "adherence": rep["adherence"],
        }
    return out


def _paired_se_points(rep: dict, base: dict) -> float | None:
    """The standard error (points) of the accuracy change, paired over the problems both
    reports share: the per-problem difference is the unit (None without per-problem rows)."""
    mine, theirs = rep.get("per_problem") or {}, base.get("per_problem") or {}
    shared = sorted(set(mine) & set(theirs))
    se = standard_error([mine[i]["accuracy"] - theirs[i]["accuracy"] for i in shared])
    return None if se is None else round(100 * se, 2)


def markdown(comparison: dict, reports: dict[str, dict]) -> str:
    settings = reports["base"]["settings"]
    lines = [
        f"# LAPO results (held-out problems of {settings.get('data', 'synthetic')})",
        "",
        f"{reports['base']['problems']} problems x k={settings['k']} samples, temperature "
        f"{settings['temperature']}, top-p {settings['top_p']}, max tokens "
        f"{settings['max_tokens']}, seed {settings['seed']}.",
        "",
        "| model | Pass@1 | mean reasoning tokens | tokens vs base | accuracy change (pts, "
        "± SE over problems) | declared-vs-actual Spearman | median abs rel. error |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in comparison.items():
        adh = row["adherence"] or {}
        lines.append(
            f"| {name} | {row['accuracy']} | {row['mean_reasoning_tokens']} | "
            f"{row['token_ratio_vs_base']} | {row['accuracy_change_points']:+}{_pm(row)} | "
            f"{adh.get('spearman', '-')} | {adh.get('median_abs_relative_error', '-')} |"
        )
    lines += ["", "Standard errors are over problems: a problem's k samples are one unit, "
              "and a change is paired problem by problem."]
    levels = [r["level"] for r in comparison["base"]["per_level"]]
    lines += ["", "Per level (Pass@1 / mean reasoning tokens):", "",
              "| model | " + " | ".join(f"L{lv}" for lv in levels) + " |",
              "|---|" + "---|" * len(levels)]
    for name, row in comparison.items():
        cells = [f"{r['accuracy']} / {r['mean_reasoning_tokens']}" for r in row["per_level"]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _pm(row: dict) -> str:
    se = row.get("accuracy_change_se_points")
    return f" ± {se}" if se else ""


def plot(reports: dict[str, dict], path: Path) -> None:
    """Reasoning tokens and Pass@1 against difficulty, one line per model (paper Fig. 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name, rep in reports.items():
        levels = [r["level"] for r in rep["per_level"]]
        ax1.plot(levels, [r["mean_reasoning_tokens"] for r in rep["per_level"]], "o-",
                 label=name)
        ax2.plot(levels, [r["accuracy"] for r in rep["per_level"]], "s--", label=name)
    ax1.set(xlabel="difficulty level", ylabel="mean reasoning tokens",
            title="reasoning length vs difficulty")
    ax2.set(xlabel="difficulty level", ylabel="Pass@1", ylim=(0, 1.05),
            title="accuracy vs difficulty")
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def baseline_profile(base: dict, lapo: dict) -> dict:
    """Base model's mean reasoning tokens, by the LAPO model's declared budget (held-out)."""
    buckets: dict[int | None, list[float]] = {}
    for pid, row in lapo["per_problem"].items():
        declared = row.get("mean_declared")
        base_row = base["per_problem"].get(pid)
        if declared is None or base_row is None:
            continue
        edge = next((e for e in PROFILE_EDGES if declared <= e), None)
        buckets.setdefault(edge, []).append(base_row["mean_reasoning_tokens"])
    rows = []
    for edge in [*PROFILE_EDGES, None]:
        values = buckets.get(edge)
        if values:
            rows.append({"declared_le": edge, "problems": len(values),
                         "base_mean_reasoning_tokens": round(statistics.fmean(values), 2)})
    return {
        "method": "base model on held-out problems, by the LAPO model's declared budget",
        "base_mean_reasoning_tokens": base["mean_reasoning_tokens"],
        "buckets": rows,
    }


def eval_summary(rep: dict) -> dict:
    return {k: rep[k] for k in ("accuracy", "mean_reasoning_tokens", "mean_completion_tokens",
                                "per_level", "adherence", "settings")}
