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
    r = subprocess.run([sys.executable, "-m", "loadtests.run", "--url", server.url,
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


def test_swap_in_the_middle_of_a_run(tmp_path_factory, server_tools, tmp_path) -> None:
    from lapo.manifest import write_manifest
    from lapo.tiny import TinyConfig, make_tiny_checkpoint

    _, start_server, stop_server = server_tools
    root = tmp_path_factory.mktemp("load-models")
    paths = []
    for name, seed in (("a", 1), ("b", 2)):
        path = make_tiny_checkpoint(root / name, ["<think>1+1=2</think>2"] * 5,
                                    TinyConfig(seed=seed))
        write_manifest(path, kind="test", stage="test", version=name)
        paths.append(path)
    live = start_server(paths[0], tmp_path_factory.mktemp("load-swap"),
                        LAPO_API_KEYS="sk-test", LAPO_ADMIN_KEY="adm-load",
                        LAPO_MODEL_ROOT=str(root))
    try:
        report = _run(live, "swap", tmp_path, "--swap-path", str(paths[1]),
                      env={"LAPO_ADMIN_KEY": "adm-load"})
    finally:
        stop_server(live)
    assert report["swaps"] == 1 and report["errors"] == 0 and report["requests"] > 0
