"""Writing a load test's report: the JSON file every `loadtests` command can leave behind
(``--out``; `lapo bench --out`). Not a command itself."""

from __future__ import annotations

import json
from pathlib import Path


def shown_path(model: Path) -> str:
    """A model folder as a report shows it: relative to the repository when inside it (never
    a machine's path in a committed report)."""
    from lapo.paths import REPO_ROOT

    shown = Path(model).resolve()
    return str(shown.relative_to(REPO_ROOT) if shown.is_relative_to(REPO_ROOT) else shown)


def write_report(out: Path | None, report: dict) -> None:
    """``report`` as indented JSON at ``out`` (folders created); nothing when ``out`` is None."""
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2) + "\n")
