"""Hot-swap end to end on the real engine: zero failed requests under streaming load, the new
version in responses, bad checkpoints refused with the old version still serving, 409 on a
concurrent swap, rollback."""

from __future__ import annotations

import json
import shutil
import threading
import time

import httpx
import pytest

pytestmark = pytest.mark.e2e
ADMIN = {"Authorization": "Bearer adm-secret-1"}
AUTH = {"Authorization": "Bearer sk-test"}
MESSAGES = [{"role": "user", "content": "Start with 3. Apply in order: (1) +2. What is the "
             "final number?"}]


def _checkpoint(root, name: str, seed: int):
    from lapo.manifest import write_manifest
    from lapo.tiny import TinyConfig, make_tiny_checkpoint

    corpus = ["<think> I will answer the question with 9 tokens.\n3+2=5</think>5"] * 10
    path = make_tiny_checkpoint(root / name, corpus, TinyConfig(seed=seed))
    write_manifest(path, kind="test", stage="test", version=name)
    return path


def _version(path) -> str:
    manifest = json.loads((path / "manifest.json").read_text())
    return manifest.get("version") or manifest["checkpoint_hash"]


@pytest.fixture(scope="module")
def swap_env(tmp_path_factory, server_tools):
    """Serve A, swap to B: the shipped models/lapo and models/base when present (copied into
    an allowed root of the test's own), else two tiny checkpoints."""
    from lapo.paths import models_dir

    _, start_server, stop_server = server_tools
    root = tmp_path_factory.mktemp("models")
    shipped = [models_dir() / "lapo", models_dir() / "base"]
    if all((p / "manifest.json").is_file() for p in shipped):
        a = shutil.copytree(shipped[0], root / "lapo")
        b = shutil.copytree(shipped[1], root / "base")
    else:
        a = _checkpoint(root, "v-a", 1)
        b = _checkpoint(root, "v-b", 2)
    live = start_server(a, tmp_path_factory.mktemp("swap"), LAPO_API_KEYS="sk-test",
                        LAPO_ADMIN_KEY="adm-secret-1", LAPO_MODEL_ROOT=str(root),
                        LAPO_SERVED_MODEL_NAME="lapo")
    try:
        yield live, root, a, b
    finally:
        stop_server(live)


def _admin(live, method: str, path: str, **kw) -> httpx.Response:
    return httpx.request(method, f"{live.url}/admin{path}", headers=ADMIN, timeout=600, **kw)


def _wait_until(predicate, what: str, timeout: float = 300.0) -> None:
    """Poll ``predicate`` (no fixed sleeps: a slow CI machine only takes longer)."""
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting until {what}")
        time.sleep(0.05)


def _fingerprint(live) -> str:
    r = httpx.post(f"{live.url}/v1/chat/completions", headers=AUTH, timeout=60,
                   json={"model": "lapo", "messages": MESSAGES, "max_tokens": 4})
    assert r.status_code == 200, r.text
    return r.json()["system_fingerprint"]


@pytest.mark.parametrize(("headers", "status"), [({}, 401),
                                                 ({"Authorization": "Bearer nope"}, 403)])
def test_admin_needs_the_admin_key(swap_env, headers, status) -> None:
    live = swap_env[0]
    r = httpx.get(f"{live.url}/admin/models", headers=headers)
    assert r.status_code == status
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert "adm-secret" not in r.text
    # The API keys do not open the admin routes either.
    assert httpx.get(f"{live.url}/admin/models", headers=AUTH).status_code == 403


def test_bad_checkpoints_are_refused_and_the_old_version_keeps_serving(swap_env,
                                                                       tmp_path) -> None:
    live, root, a, _ = swap_env
    before = _fingerprint(live)
    no_manifest = root / "no-manifest"
    shutil.copytree(a, no_manifest)
    (no_manifest / "manifest.json").unlink()
    pickled = root / "pickled"
    shutil.copytree(a, pickled)
    (pickled / "pytorch_model.bin").write_bytes(b"x")
    tampered = root / "tampered"
    shutil.copytree(a, tampered)
    manifest = json.loads((tampered / "manifest.json").read_text())
    manifest["checkpoint_hash"] = "0" * 16
    (tampered / "manifest.json").write_text(json.dumps(manifest))
    outside = tmp_path / "outside"
    shutil.copytree(a, outside)
    cases = [(no_manifest, "manifest.json missing"), (pickled, "pickle"),
             (tampered, "does not match"), (outside, "outside the allowed model root"),
             (root / "missing", "no checkpoint folder")]
    for path, message in cases:
        r = _admin(live, "POST", "/models/swap", json={"path": str(path)})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["code"] == "invalid_checkpoint"
        assert message in r.json()["error"]["message"]
    assert _fingerprint(live) == before


def test_swap_under_streaming_load_drops_nothing(swap_env) -> None:
    live, _, a, b = swap_env
    va, vb = _version(a), _version(b)
    stop = threading.Event()
    results: list[tuple[str, bool]] = []
    lock = threading.Lock()

    def client_loop() -> None:
        while not stop.is_set():
            ok, fingerprint = False, ""
            try:
                with httpx.stream("POST", f"{live.url}/v1/chat/completions", headers=AUTH,
                                  timeout=120, json={"model": "lapo", "messages": MESSAGES,
                                                     "max_tokens": 48, "stream": True}) as r:
                    lines = [x for x in r.iter_lines() if x.startswith("data: ")]
                finishes = [c["finish_reason"] for x in lines[:-1]
                            for c in json.loads(x[6:])["choices"] if c.get("finish_reason")]
                # Not failed, not truncated: [DONE], no error event, a finish reason.
                ok = (r.status_code == 200 and lines[-1] == "data: [DONE]"
                      and not any('"error"' in x for x in lines)
                      and finishes and all(f in ("stop", "length") for f in finishes))
                fingerprint = json.loads(lines[0][6:])["system_fingerprint"] if ok else ""
            except httpx.HTTPError:
                ok = False
            with lock:
                results.append((fingerprint, ok))

    threads = [threading.Thread(target=client_loop) for _ in range(4)]
    for t in threads:
        t.start()
    _wait_until(lambda: sum(f == f"lapo-{va}" for f, _ in results) >= 4,
                "4 streams finished on the old version")
    r = _admin(live, "POST", "/models/swap", json={"path": str(b)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["version"] == vb and body["previous"] == va
    assert {"validate", "load", "warm", "switch", "drain_old"} <= set(body["phases_s"])
    _wait_until(lambda: sum(f == f"lapo-{vb}" for f, _ in results) >= 4,
                "4 streams finished on the new version")
    stop.set()
    for t in threads:
        t.join(timeout=120)
    assert results and all(ok for _, ok in results), [r for r in results if not r[1]]
    fingerprints = [f for f, _ in results]
    assert f"lapo-{va}" in fingerprints and f"lapo-{vb}" in fingerprints
    # Once the swap returned, every new request is served by the new version.
    assert _fingerprint(live) == f"lapo-{vb}"
    models = httpx.get(f"{live.url}/v1/models", headers=AUTH).json()
    assert models["data"][0]["version"] == vb
    listing = _admin(live, "GET", "/models").json()
    assert listing["active"] == vb
    assert [e["state"] for e in listing["history"]] == ["retired", "active"]
    assert live.metric("lapo_swaps_total", result="ok") >= 1
    assert live.metric("lapo_model_info", version=vb) == 1
    assert live.metric("lapo_model_info", version=va) == 0


def test_concurrent_swap_gets_409_and_rollback_restores(swap_env) -> None:
    live, _, a, b = swap_env
    statuses: list[int] = []

    def rollback() -> None:
        statuses.append(_admin(live, "POST", "/models/rollback").status_code)

    def phase() -> str | None:
        return _admin(live, "GET", "/models").json()["swap"]["phase"]

    assert _admin(live, "GET", "/models").json()["swap"] == {"in_progress": False,
                                                               "path": None, "phase": None}
    first = threading.Thread(target=rollback)
    first.start()
    # The rollback loads its engine for many seconds: swap while it does.
    _wait_until(lambda: phase() == "load", "the rollback is loading its engine")
    second = _admin(live, "POST", "/models/swap", json={"path": str(b)})
    first.join(timeout=600)
    assert second.status_code == 409 and second.json()["error"]["code"] == "swap_in_progress"
    assert statuses == [200]
    assert _fingerprint(live) == f"lapo-{_version(a)}"


def test_load_tool_swap_scenario(swap_env, tmp_path) -> None:
    """`python -m lapo.loadtests.run --scenario swap` (a hot-swap in the middle of a load run)
    against this server: one swap, no errors (run here to share this module's server)."""
    import os
    import subprocess
    import sys

    live, _, _, b = swap_env
    out = tmp_path / "swap.json"
    r = subprocess.run([sys.executable, "-m", "lapo.loadtests.run", "--url", live.url,
                        "--scenario", "swap", "--short", "--model", "lapo", "--api-key",
                        "sk-test", "--swap-path", str(b), "--out", str(out)],
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, "LAPO_ADMIN_KEY": "adm-secret-1"})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    report = json.loads(out.read_text())
    assert report["swaps"] == 1 and report["errors"] == 0 and report["requests"] > 0
    assert _fingerprint(live) == f"lapo-{_version(b)}"


def test_replace_strategy_drains_then_swaps_without_failing_admitted_requests(swap_env) -> None:
    """One engine at a time (a swap's "strategy": "replace", overriding the server's
    side_by_side): new requests get 503 + Retry-After while swapping; every request that was
    admitted finishes."""
    live, _, a, b = swap_env
    target = a if _fingerprint(live) == f"lapo-{_version(b)}" else b
    stop, outcomes = threading.Event(), []

    def loop() -> None:
        while not stop.is_set():
            with httpx.stream("POST", f"{live.url}/v1/chat/completions", headers=AUTH,
                              timeout=120, json={"model": "lapo", "messages": MESSAGES,
                                                 "max_tokens": 48, "stream": True}) as r:
                if r.status_code == 503:
                    assert r.headers["retry-after"]
                    outcomes.append("refused")
                    time.sleep(0.2)
                    continue
                lines = [x for x in r.iter_lines() if x.startswith("data: ")]
                done = r.status_code == 200 and lines[-1] == "data: [DONE]"
                outcomes.append("ok" if done else "failed")

    threads = [threading.Thread(target=loop) for _ in range(3)]
    try:
        for t in threads:
            t.start()
        _wait_until(lambda: outcomes.count("ok") >= 3, "3 streams finished before the swap")
        r = _admin(live, "POST", "/models/swap", json={"path": str(target),
                                                        "strategy": "replace"})
        served = outcomes.count("ok")
        _wait_until(lambda: outcomes.count("ok") >= served + 3,
                    "3 streams finished after the swap")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["strategy"] == "replace"
    assert "failed" not in outcomes and outcomes.count("ok") > 0
    assert _fingerprint(live) == f"lapo-{_version(target)}"
    # The server's own strategy is unchanged, and an unknown one is a 400 naming the field.
    assert _admin(live, "GET", "/models").json()["strategy"] == "side_by_side"
    bad = _admin(live, "POST", "/models/swap", json={"path": str(target), "strategy": "x"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "strategy", bad.text
