"""LoRA adapters on the real engine: swapped into a running engine under load (no second
engine, zero failed requests, rollback on the same engine), refused when trained on another
base; and an adapter that ships its own tokenizer files (the base's vocabulary, another chat
template) served with ITS template and think profile: as `LAPO_MODEL` (one engine, on its
base, LoRA on) and hot-swapped into a server on the base.

The base is a plain ChatML model (think profile ``none``: no reasoning is counted); the
adapter's template opens ``<think>\\n`` as text (several tokens; profile ``prompt``/``text``),
so which template served a request shows in the prompt tokens and the reasoning counted.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from types import SimpleNamespace

import httpx
import pytest

pytestmark = pytest.mark.e2e
ADMIN = {"Authorization": "Bearer adm-tpl"}
AUTH = {"Authorization": "Bearer sk-test"}
MESSAGES = [{"role": "user", "content": "Start with 2. Apply in order: (1) +2. What is the "
             "final number?"}]
GENERATION_PROMPT = "<|im_start|>assistant\n"


def _adapter(base, out, version: str, base_hash: str, tokenizer=None, r: int = 12) -> str:
    """A PEFT adapter over ``base`` (random LoRA weights); with ``tokenizer``, its own files."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from lapo.manifest import write_manifest

    model = AutoModelForCausalLM.from_pretrained(base)
    # r=12: above the default LAPO_MAX_LORA_RANK (8); vLLM serves it at rank 16.
    get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=["q_proj", "v_proj"],
                                     init_lora_weights=False)).save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    write_manifest(out, kind="test-adapter", stage="test", version=version,
                   base_checkpoint=str(base), base_checkpoint_hash=base_hash)
    return str(out)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from transformers import AutoTokenizer

    from lapo.manifest import write_manifest
    from lapo.tiny import TEMPLATES, TinyConfig, make_tiny_checkpoint

    root = tmp_path_factory.mktemp("adapter-tpl-models")
    base = make_tiny_checkpoint(root / "base", ["What is 2+2? The final number is 4."] * 10,
                                TinyConfig(seed=5), template="chatml")
    base_hash = write_manifest(base, kind="test", stage="test",
                               version="base-1")["checkpoint_hash"]
    think_tok = AutoTokenizer.from_pretrained(base)
    think_tok.chat_template = TEMPLATES["r1"]  # ChatML + "<think>\n" (text) to generate
    grown_tok = AutoTokenizer.from_pretrained(base)
    grown_tok.chat_template = TEMPLATES["r1"]
    grown_tok.add_tokens(["<think>", "</think>"])  # a vocabulary LoRA serving cannot have
    return SimpleNamespace(
        root=root, base=str(base), tok=AutoTokenizer.from_pretrained(base),
        think=_adapter(base, root / "think", "think-1", base_hash, think_tok),
        grown=_adapter(base, root / "grown", "grown-1", base_hash, grown_tok),
        plain=_adapter(base, root / "adapter-1", "adapter-1", base_hash, r=4),
        wrong=_adapter(base, root / "adapter-wrong", "adapter-wrong", "0" * 16, r=4))


def _chat(adapter_live, model: str) -> dict:
    """A greedy chat request that runs to max_tokens (the tiny model's EOS ignored)."""
    r = httpx.post(f"{adapter_live.url}/v1/chat/completions", headers=AUTH, timeout=120,
                   json={"model": model, "messages": MESSAGES, "max_tokens": 12,
                         "temperature": 0, "ignore_eos": True})
    assert r.status_code == 200, r.text
    return r.json()


def _prompt(adapter_live, model: str) -> str:
    """The chat prompt as the served model's template renders it (its token ids, decoded)."""
    r = httpx.post(f"{adapter_live.url}/tokenize", headers=AUTH, timeout=30,
                   json={"model": model, "messages": MESSAGES})
    assert r.status_code == 200, r.text
    d = httpx.post(f"{adapter_live.url}/detokenize", headers=AUTH, timeout=30,
                   json={"model": model, "tokens": r.json()["tokens"]})
    return d.json()["prompt"]


def _reasoning(body: dict) -> int:
    info = body["choices"][0]["lapo"]
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == \
        info["reasoning_tokens"]
    return info["reasoning_tokens"]


def _assert_adapter_served(adapter_live, model: str) -> None:
    """The adapter's template opened the think span: the completion is reasoning."""
    assert _prompt(adapter_live, model).endswith(GENERATION_PROMPT + "<think>\n")
    body = _chat(adapter_live, model)
    assert body["system_fingerprint"] == "lapo-think-1"
    assert _reasoning(body) == body["usage"]["completion_tokens"] == 12
    assert body["choices"][0]["lapo"]["actual_reasoning_tokens"] == 12
    assert not body["choices"][0]["message"]["content"]  # no answer: the span never closed


def _assert_base_served(adapter_live, model: str) -> None:
    """The base's plain template: no think span, nothing counted as reasoning."""
    assert _prompt(adapter_live, model).endswith(GENERATION_PROMPT)
    body = _chat(adapter_live, model)
    assert body["system_fingerprint"] == "lapo-base-1"
    assert _reasoning(body) == 0 and body["usage"]["completion_tokens"] == 12


def _swap(adapter_live, path: str | None) -> httpx.Response:
    if path is None:
        return httpx.post(f"{adapter_live.url}/admin/models/rollback", headers=ADMIN, timeout=300)
    return httpx.post(f"{adapter_live.url}/admin/models/swap", headers=ADMIN, timeout=300,
                      json={"path": path})


# Class-scoped: one server at a time (each is one engine on this machine's cores).
@pytest.fixture(scope="class")
def adapter_live(models, tmp_path_factory, server_tools):
    """LAPO_MODEL=<adapter folder> (LAPO_ENABLE_LORA not set: the adapter turns LoRA on)."""
    _, start_server, stop_server = server_tools
    server = start_server(models.think, tmp_path_factory.mktemp("tpl-adapter"),
                          LAPO_API_KEYS="sk-test", LAPO_ADMIN_KEY="adm-tpl",
                          LAPO_MODEL_ROOT=str(models.root), LAPO_ENGINE_RESTART_BACKOFF_S="0.5")
    try:
        yield server
    finally:
        stop_server(server)


@pytest.fixture(scope="class")
def base_live(models, tmp_path_factory, server_tools):
    _, start_server, stop_server = server_tools
    server = start_server(models.base, tmp_path_factory.mktemp("tpl-base"),
                          LAPO_API_KEYS="sk-test", LAPO_ADMIN_KEY="adm-tpl",
                          LAPO_MODEL_ROOT=str(models.root), LAPO_ENABLE_LORA="true",
                          LAPO_MAX_LORA_RANK="16", LAPO_SERVED_MODEL_NAME="lapo")
    try:
        yield server
    finally:
        stop_server(server)


class TestAdapterAsTheModel:
    """`lapo serve` on the adapter folder: one engine on its base, the adapter's template."""

    def test_serves_the_adapter_with_its_template_on_one_engine(self, adapter_live, models) -> None:
        assert adapter_live.model == "think"  # the adapter folder's name
        assert len(adapter_live.engine_core_pids()) == 1
        _assert_adapter_served(adapter_live, adapter_live.model)
        card = httpx.get(f"{adapter_live.url}/v1/models", headers=AUTH).json()["data"][0]
        assert card["version"] == "think-1"
        listing = httpx.get(f"{adapter_live.url}/admin/models", headers=ADMIN).json()
        assert listing["active"] == "think-1"
        assert listing["history"][0]["path"] == models.think
        assert listing["history"][0]["think_profile"]["opens"] == "prompt"
        assert listing["history"][0]["think_profile"]["tags"] == "text"

    def test_swaps_to_its_base_and_back_on_the_same_engine(self, adapter_live, models) -> None:
        engines = adapter_live.engine_core_pids()
        r = _swap(adapter_live, models.base)
        assert r.status_code == 200, r.text
        _assert_base_served(adapter_live, adapter_live.model)
        back = _swap(adapter_live, None)
        assert back.status_code == 200, back.text
        assert back.json()["version"] == "think-1"
        _assert_adapter_served(adapter_live, adapter_live.model)
        assert adapter_live.engine_core_pids() == engines

    def test_a_restarted_engine_serves_the_adapter_again(self, adapter_live) -> None:
        (engine,) = adapter_live.engine_core_pids()
        os.kill(engine, signal.SIGKILL)
        deadline = time.time() + 5
        while httpx.get(f"{adapter_live.url}/ready").status_code == 200 and time.time() < deadline:
            time.sleep(0.02)
        deadline = time.time() + 180
        while httpx.get(f"{adapter_live.url}/ready").status_code != 200:
            assert time.time() < deadline, adapter_live.log_text()[-3000:]
            time.sleep(0.5)
        assert adapter_live.metric("lapo_engine_restarts_total", result="ok") == 1
        _assert_adapter_served(adapter_live, adapter_live.model)


def _fingerprint(live) -> str:
    r = httpx.post(f"{live.url}/v1/chat/completions", headers=AUTH, timeout=60,
                   json={"model": "lapo", "messages": MESSAGES, "max_tokens": 4})
    assert r.status_code == 200, r.text
    return r.json()["system_fingerprint"]


class TestSwapIntoABaseServer:
    """A server on the base (LoRA on) hot-swaps to adapters (the first two tests need the
    base active: they run first)."""

    def test_adapter_for_another_base_is_refused(self, base_live, models) -> None:
        r = _swap(base_live, models.wrong)
        assert r.status_code == 400 and "trained on base" in r.json()["error"]["message"]
        assert _fingerprint(base_live) == "lapo-base-1"

    def test_adapter_swaps_into_the_running_engine_under_load(self, base_live, models) -> None:
        live = base_live
        engines_before = live.engine_core_pids()
        assert len(engines_before) == 1
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
        try:
            for t in threads:
                t.start()
            wait_until(lambda: served_by("lapo-base-1") >= 3, "3 streams finished on the base")
            r = _swap(live, models.plain)
            wait_until(lambda: served_by("lapo-adapter-1") >= 3,
                       "3 streams finished on the adapter")
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["version"] == "adapter-1"
        assert results and all(ok for ok, _ in results), [x for x in results if not x[0]]
        assert _fingerprint(live) == "lapo-adapter-1"
        assert live.engine_core_pids() == engines_before  # no second engine
        # Rolling back to the base reuses the same engine too.
        back = _swap(live, None)
        assert back.status_code == 200, back.text
        assert _fingerprint(live) == "lapo-base-1"
        assert live.engine_core_pids() == engines_before
        listing = httpx.get(f"{live.url}/admin/models", headers=ADMIN).json()
        assert [e["version"] for e in listing["history"]] == ["base-1", "adapter-1", "base-1"]
        assert [e["state"] for e in listing["history"]] == ["retired", "retired", "active"]
        assert listing["active"] == "base-1" and listing["swap"]["in_progress"] is False

    def test_an_adapter_with_another_vocabulary_is_refused(self, base_live, models) -> None:
        r = _swap(base_live, models.grown)
        assert r.status_code == 400, r.text
        message = r.json()["error"]["message"]
        assert "different vocabulary" in message and "cannot add tokens" in message
        _assert_base_served(base_live, "lapo")

    def test_the_swapped_adapter_prompts_with_its_own_template(self, base_live, models) -> None:
        engines = base_live.engine_core_pids()
        base_prompt = _prompt(base_live, "lapo")
        r = _swap(base_live, models.think)
        assert r.status_code == 200, r.text
        assert r.json()["version"] == "think-1"
        _assert_adapter_served(base_live, "lapo")
        assert _prompt(base_live, "lapo") == base_prompt + "<think>\n"
        count = len(models.tok.encode(base_prompt + "<think>\n", add_special_tokens=False))
        assert _chat(base_live, "lapo")["usage"]["prompt_tokens"] == count
        assert base_live.engine_core_pids() == engines
