"""LoRA adapters swap into the running engine: no second engine, zero failed requests."""

from __future__ import annotations

import json
import threading
import time

import httpx
import psutil
import pytest

pytestmark = pytest.mark.e2e
ADMIN = {"Authorization": "Bearer adm-lora"}
AUTH = {"Authorization": "Bearer sk-test"}
MESSAGES = [{"role": "user", "content": "Start with 2. Apply in order: (1) +2. What is the "
             "final number?"}]


def _adapter(base, out, version: str, base_hash: str):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lapo.manifest import write_manifest

    model = AutoModelForCausalLM.from_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8,
                                                  target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False))
    peft_model.save_pretrained(out)
    write_manifest(out, kind="test-adapter", stage="test", version=version,
                   base_checkpoint_hash=base_hash)
    return out


@pytest.fixture(scope="module")
def lora_env(tmp_path_factory, server_tools):
    from lapo.manifest import write_manifest
    from lapo.tiny import TinyConfig, make_tiny_checkpoint

    _, start_server, stop_server = server_tools
    root = tmp_path_factory.mktemp("lora-models")
    base = make_tiny_checkpoint(root / "base", ["<think>2+2=4</think>4"] * 10,
                                TinyConfig(seed=3))
    manifest = write_manifest(base, kind="test", stage="test", version="base-1")
    good = _adapter(base, root / "adapter-1", "adapter-1", manifest["checkpoint_hash"])
    wrong = _adapter(base, root / "adapter-wrong", "adapter-wrong", "0" * 16)
    live = start_server(base, tmp_path_factory.mktemp("lora"), LAPO_API_KEYS="sk-test",
                        LAPO_ADMIN_KEY="adm-lora", LAPO_MODEL_ROOT=str(root),
                        LAPO_ENABLE_LORA="true", LAPO_SERVED_MODEL_NAME="lapo")
    try:
        yield live, good, wrong
    finally:
        stop_server(live)


def _engines(live) -> int:
    procs = psutil.Process(live.proc.pid).children(recursive=True)
    return sum(1 for p in procs if "EngineCore" in " ".join(p.cmdline()) or
               "EngineCore" in p.name())


def _fingerprint(live) -> str:
    r = httpx.post(f"{live.url}/v1/chat/completions", headers=AUTH, timeout=60,
                   json={"model": "lapo", "messages": MESSAGES, "max_tokens": 4})
    assert r.status_code == 200, r.text
    return r.json()["system_fingerprint"]


def test_adapter_for_another_base_is_refused(lora_env) -> None:
    live, _, wrong = lora_env
    r = httpx.post(f"{live.url}/admin/models/swap", headers=ADMIN, timeout=120,
                   json={"path": str(wrong)})
    assert r.status_code == 400 and "trained on base" in r.json()["error"]["message"]
    assert _fingerprint(live) == "lapo-base-1"


def test_adapter_swaps_into_the_running_engine_under_load(lora_env) -> None:
    live, good, _ = lora_env
    engines_before = _engines(live)
    assert engines_before >= 1
    stop, results = threading.Event(), []

    def loop() -> None:
        while not stop.is_set():
            try:
                with httpx.stream("POST", f"{live.url}/v1/chat/completions", headers=AUTH,
                                  timeout=120, json={"model": "lapo", "messages": MESSAGES,
                                                     "max_tokens": 32, "stream": True}) as r:
                    lines = [x for x in r.iter_lines() if x.startswith("data: ")]
                ok = (r.status_code == 200 and lines[-1] == "data: [DONE]"
                      and not any('"error"' in x for x in lines))
                results.append((ok, json.loads(lines[0][6:])["system_fingerprint"]
                                if ok else ""))
            except httpx.HTTPError:
                results.append((False, ""))

    def served_by(fingerprint: str) -> int:
        return sum(f == fingerprint for _, f in results)

    def wait_until(predicate, what: str) -> None:
        deadline = time.time() + 300
        while not predicate():
            assert time.time() < deadline, f"timed out waiting until {what}"
            time.sleep(0.05)

    threads = [threading.Thread(target=loop) for _ in range(3)]
    for t in threads:
        t.start()
    wait_until(lambda: served_by("lapo-base-1") >= 3, "3 streams finished on the base")
    r = httpx.post(f"{live.url}/admin/models/swap", headers=ADMIN, timeout=300,
                   json={"path": str(good)})
    wait_until(lambda: served_by("lapo-adapter-1") >= 3, "3 streams finished on the adapter")
    stop.set()
    for t in threads:
        t.join(timeout=120)
    assert r.status_code == 200, r.text
    assert r.json()["version"] == "adapter-1"
    assert results and all(ok for ok, _ in results), [x for x in results if not x[0]]
    assert _fingerprint(live) == "lapo-adapter-1"
    assert _engines(live) == engines_before  # no second engine
    # Rolling back to the base reuses the same engine too.
    back = httpx.post(f"{live.url}/admin/models/rollback", headers=ADMIN, timeout=300)
    assert back.status_code == 200, back.text
    assert _fingerprint(live) == "lapo-base-1"
    assert _engines(live) == engines_before
    listing = httpx.get(f"{live.url}/admin/models", headers=ADMIN).json()
    assert [e["version"] for e in listing["history"]] == ["base-1", "adapter-1", "base-1"]
    assert [e["state"] for e in listing["history"]] == ["retired", "retired", "active"]
    assert listing["active"] == "base-1" and listing["swap"]["in_progress"] is False
