"""`lapo eval` on the real engine in-process, and against a live OpenAI-compatible server."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def _check_report(path, problems: int, k: int) -> dict:
    report = json.loads(path.read_text())
    assert report["problems"] == problems and report["samples"] == problems * k
    assert 0.0 <= report["accuracy"] <= 1.0
    assert report["mean_completion_tokens"] >= report["mean_reasoning_tokens"] >= 0
    assert {row["level"] for row in report["per_level"]} <= {1, 2, 3, 4, 5}
    assert "adherence" in report and report["settings"]["k"] == k
    assert path.with_suffix(".md").is_file() and path.with_suffix(".png").is_file()
    return report


def test_eval_in_process(server, tmp_path) -> None:
    out = tmp_path / "local.json"
    subprocess.run([sys.executable, "-m", "lapo.cli", "eval", "--model", str(server.path),
                    "--out", str(out), "--limit", "6", "--k", "2", "--max-tokens", "200"],
                   check=True, timeout=600)
    _check_report(out, 6, 2)


def test_eval_against_live_endpoint(server, tmp_path) -> None:
    out = tmp_path / "endpoint.json"
    env_key = {"OPENAI_API_KEY": "sk-test"}
    import os

    subprocess.run([sys.executable, "-m", "lapo.cli", "eval", "--endpoint",
                    f"{server.url}/v1", "--model", server.model, "--out", str(out),
                    "--limit", "6", "--k", "2", "--max-tokens", "200"],
                   check=True, timeout=600, env={**os.environ, **env_key})
    report = _check_report(out, 6, 2)
    assert report["settings"]["endpoint"] == f"{server.url}/v1"


def test_eval_with_injected_budget_reports_adherence(server, tmp_path) -> None:
    out = tmp_path / "budget.json"
    import os

    subprocess.run([sys.executable, "-m", "lapo.cli", "eval", "--endpoint",
                    f"{server.url}/v1", "--model", server.model, "--out", str(out),
                    "--limit", "4", "--k", "2", "--max-tokens", "200", "--budget", "30"],
                   check=True, timeout=600, env={**os.environ, "OPENAI_API_KEY": "sk-test"})
    report = _check_report(out, 4, 2)
    assert report["adherence"]["samples"] == 8
    assert report["adherence"]["mean_declared_tokens"] == 30


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--model", "/nonexistent/ckpt"], "no checkpoint"),
     (["--endpoint", "http://127.0.0.1:9/v1", "--model", "x"], "unreachable")],
)
def test_clear_errors(tmp_path, args, message) -> None:
    r = subprocess.run([sys.executable, "-m", "lapo.cli", "eval", *args, "--out",
                        str(tmp_path / "r.json")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert message in r.stderr
