"""Every load-test scenario in its short mode against a live server: no errors (no timings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def _run(server, scenario: str, tmp_path, *extra: str, env=None) -> dict:
    out = tmp_path / f"{scenario}.json"
    r = subprocess.run([sys.executable, "-m", "lapo.loadtests.run", "--url", server.url,
                        "--scenario", scenario, "--short", "--model", server.model,
                        "--api-key", "sk-test", "--out", str(out), *extra],
                       capture_output=True, text=True, timeout=300,
                       env={**os.environ, **(env or {})})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("scenario", ["steady", "burst", "long", "mixed", "disconnect"])
def test_scenario_short_mode(server, tmp_path, scenario: str) -> None:
    report = _run(server, scenario, tmp_path)
    assert report["requests"] > 0 and report["errors"] == 0
    for key in ("ttft_reasoning_p50_ms", "e2e_p95_ms", "requests_per_s", "reasoning_share",
                "goodput_requests_per_s", "tokens_saved", "itl_p50_ms"):
        assert key in report
    if scenario == "disconnect":
        assert report["disconnects"] > 0



# The swap scenario runs in tests/service/test_swap_e2e.py, on that module's swap server.
