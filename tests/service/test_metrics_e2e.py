"""Metrics end to end: counters agree with responses, a real Prometheus scrapes them, and every
dashboard panel and alert expression runs on it. The server also runs the shadow baseline."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time

import httpx
import pytest

from lapo.paths import REPO_ROOT, models_dir

pytestmark = pytest.mark.e2e
MESSAGES = [{"role": "user", "content": "Start with 4. Apply in order: (1) +3, (2) *2. "
             "What is the final number?"}]
AUTH = {"Authorization": "Bearer sk-test"}


@pytest.fixture(scope="module")
def shadow_server(tiny_checkpoint, tmp_path_factory, server_tools):
    served_checkpoint, start_server, stop_server = server_tools
    served = served_checkpoint(tiny_checkpoint)
    baseline = models_dir() / "base"
    if not (baseline / "config.json").is_file():
        baseline = tiny_checkpoint
    live = start_server(served, tmp_path_factory.mktemp("shadow"), LAPO_API_KEYS="sk-test",
                        LAPO_SHADOW_MODEL=str(baseline), LAPO_SHADOW_FRACTION="1.0",
                        LAPO_SHADOW_CONCURRENCY="1")
    try:
        yield live
    finally:
        stop_server(live)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def prometheus(shadow_server, tmp_path_factory):
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed (.ci/run installs the Debian package)")
        pytest.skip("prometheus not installed (apt-get install prometheus)")
    tmp = tmp_path_factory.mktemp("prom")
    target = shadow_server.url.removeprefix("http://")
    (tmp / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "rule_files: [" + str(REPO_ROOT / "deploy/prometheus/alerts.yml") + "]\n"
        f"scrape_configs:\n  - job_name: lapo\n    static_configs:\n"
        f"      - targets: ['{target}']\n")
    port = _free_port()
    proc = subprocess.Popen([binary, f"--config.file={tmp / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=(tmp / "log").open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(60):
        try:
            if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _query(prom: str, expr: str) -> dict:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10)
    body = r.json()
    assert body["status"] == "success", (expr, body)
    return body["data"]


def _post(server, **body) -> dict:
    r = httpx.post(f"{server.url}/v1/chat/completions", headers=AUTH, timeout=120,
                   json={"model": server.model, "messages": MESSAGES, "max_tokens": 200, **body})
    assert r.status_code == 200, r.text
    return r.json()


def _stream_usage(server, **body) -> int:
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", headers=AUTH, timeout=120,
                      json={"model": server.model, "messages": MESSAGES, "max_tokens": 200,
                            "stream": True, "stream_options": {"include_usage": True},
                            **body}) as r:
        lines = [x for x in r.iter_lines() if x.startswith("data: {")]
    return json.loads(lines[-1][6:])["usage"]["completion_tokens_details"]["reasoning_tokens"]


def test_vllm_metrics_on_the_same_endpoint(shadow_server) -> None:
    text = httpx.get(f"{shadow_server.url}/metrics").text
    assert "vllm:num_requests_running" in text
    assert "# HELP lapo_reasoning_tokens_total" in text
    assert 'lapo_model_info{' in text


def test_reasoning_counter_rises_by_exactly_what_clients_received(shadow_server) -> None:
    before = shadow_server.metric("lapo_reasoning_tokens_total")
    received = 0
    for seed in range(3):
        received += _post(shadow_server, seed=seed)["usage"]["completion_tokens_details"][
            "reasoning_tokens"]
    received += _post(shadow_server, n=2, seed=9)["usage"]["completion_tokens_details"][
        "reasoning_tokens"]
    received += _stream_usage(shadow_server, seed=4)
    received += _stream_usage(shadow_server, seed=5, reasoning_budget=20)
    assert received > 0
    assert shadow_server.metric("lapo_reasoning_tokens_total") - before == received


def test_budget_metrics_follow_requests(shadow_server) -> None:
    before = shadow_server.metric("lapo_declared_reasoning_tokens_count", budget_source="request")
    enforced = shadow_server.metric("lapo_hard_cap_enforcements_total")
    body = _post(shadow_server, reasoning_budget=4, budget_enforcement="hard", seed=1)
    assert shadow_server.metric("lapo_declared_reasoning_tokens_count",
                                budget_source="request") == before + 1
    was_enforced = body["choices"][0]["lapo"]["enforced"]
    assert shadow_server.metric("lapo_hard_cap_enforcements_total") == enforced + was_enforced


def _shadow_settled(server, at_least: float):
    """The first scrape in which no shadow run is running and ``at_least`` have ended (done,
    shed, error or cancelled); every submission has happened once its response returned."""
    deadline = time.time() + 180
    while time.time() < deadline:
        scrape = server.scrape()
        if (scrape("lapo_shadow_runs_running") == 0
                and scrape("lapo_shadow_runs_total") >= at_least):
            return scrape
        time.sleep(0.5)
    raise AssertionError("shadow runs did not settle in 180 s")


def test_shadow_baseline_is_measured_off_the_response_path(shadow_server) -> None:
    ended = _shadow_settled(shadow_server, 0)("lapo_shadow_runs_total")
    for seed in range(3):
        _post(shadow_server, seed=100 + seed)
    scrape = _shadow_settled(shadow_server, ended + 3)  # fraction 1.0: each one ran or shed
    assert scrape("lapo_shadow_runs_total") == ended + 3
    assert scrape("lapo_shadow_runs_total", result="done") >= 1
    assert scrape("lapo_shadow_runs_total", result="error") == 0
    # One scrape: the four counters at one instant, with nothing running.
    baseline = scrape("lapo_baseline_reasoning_tokens_total", method="shadow")
    compared = scrape("lapo_compared_reasoning_tokens_total", method="shadow")
    saved = scrape("lapo_tokens_saved_total", method="shadow")
    over = scrape("lapo_tokens_overspent_total", method="shadow")
    assert baseline > 0 and compared > 0
    assert saved - over == pytest.approx(baseline - compared)


def test_prometheus_scrapes_the_same_numbers(shadow_server, prometheus) -> None:
    _post(shadow_server, seed=42)
    direct = shadow_server.metric("lapo_reasoning_tokens_total")
    deadline = time.time() + 30
    scraped = None
    while time.time() < deadline:
        result = _query(prometheus, "sum(lapo_reasoning_tokens_total)")["result"]
        scraped = float(result[0]["value"][1]) if result else None
        if scraped == direct:
            break
        time.sleep(1)
    assert scraped == direct


def _dashboard() -> dict:
    return json.loads((REPO_ROOT / "deploy/grafana/dashboards/lapo.json").read_text())


def _concrete(expr: str) -> str:
    """Grafana's variables as their 'All' value."""
    return expr.replace("$model", ".*").replace("$version", ".*")


def _dashboard_exprs() -> list[str]:
    dash = _dashboard()
    exprs = [t["expr"] for panel in dash["panels"] for t in panel["targets"]]
    exprs += [a["expr"] for a in dash["annotations"]["list"]]
    return [_concrete(e) for e in exprs]


def _alert_exprs() -> list[str]:
    import yaml

    rules = yaml.safe_load((REPO_ROOT / "deploy/prometheus/alerts.yml").read_text())
    return [r["expr"] for g in rules["groups"] for r in g["rules"]]


def test_every_dashboard_and_alert_expression_runs(shadow_server, prometheus) -> None:
    # Traffic of every kind while Prometheus scrapes: self-declared, request, effort, hard cap.
    _post(shadow_server, seed=7)
    _post(shadow_server, seed=8, reasoning_budget=12)
    _post(shadow_server, seed=9, reasoning_effort="low")
    _post(shadow_server, seed=10, reasoning_budget=3, budget_enforcement="hard")
    _stream_usage(shadow_server, seed=11)
    exprs = _dashboard_exprs() + _alert_exprs()
    assert len(exprs) >= 20
    for expr in exprs:
        _query(prometheus, expr)  # each parses and evaluates on real data
    # Every dashboard panel returns data once Prometheus has scraped the traffic (rates need
    # two scrapes after it): wait for that, not for a fixed time.
    panels = _dashboard()["panels"]
    deadline = time.time() + 60
    while True:
        empty = [panel["title"] for panel in panels
                 if not any(_query(prometheus, _concrete(t["expr"]))["result"]
                            for t in panel["targets"])]
        if not empty or time.time() > deadline:
            break
        time.sleep(1)
    assert not empty, f"panels without data after 60 s: {empty}"
    # The template variables' label queries find the served model and version.
    info = _query(prometheus, "lapo_model_info")["result"]
    assert {r["metric"]["model"] for r in info} == {shadow_server.model}

