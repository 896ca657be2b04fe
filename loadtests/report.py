"""Writing a load test's report: the JSON file every `loadtests` command can leave behind
(``--out``; `lapo bench --out`). Not a command itself."""

from __future__ import annotations

import json
from pathlib import Path


def write_report(out: Path | None, report: dict) -> None:
    """``report`` as indented JSON at ``out`` (folders created); nothing when ``out`` is None."""
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=2) + "\n")
