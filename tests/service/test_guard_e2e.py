"""Back-pressure, body limit, CORS and request logs on a live server (real engine).

The server admits one request at a time with a queue of one, so a long request, a queued one
and a refused one can be lined up deterministically: the long one holds the slot for seconds
(eight choices sampled at temperature 2 run to their token limit or near it).
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

pytestmark = pytest.mark.e2e

KEY = {"Authorization": "Bearer sk-guard"}
QUESTION = "Start with 7. Apply in order: +5, *2, -4. What is the final number?"
ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def guarded(tiny_checkpoint, tmp_path_factory, server_tools):
    served, start, stop = server_tools
    live = start(served(tiny_checkpoint), tmp_path_factory.mktemp("guard"),
                 LAPO_API_KEYS="sk-guard", LAPO_MAX_CONCURRENCY="1", LAPO_MAX_QUEUE="1",
                 LAPO_RETRY_AFTER_S="3", LAPO_MAX_BODY_BYTES="8192",
                 LAPO_CORS_ORIGINS=ORIGIN)
    try:
        yield live
    finally:
        stop(live)


def _body(server, **kw) -> dict:
    return {"model": server.model, "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": 30, **kw}


def _post(server, body, timeout=120) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/chat/completions", json=body, headers=KEY,
                      timeout=timeout)


def _wait(predicate, seconds=30.0) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def test_queue_full_gets_429_and_admitted_requests_finish(guarded) -> None:
    """A burst of 12 at a server admitting 1 (+1 queued): the rest are refused at once."""
    refused_before = guarded.metric("lapo_requests_rejected_total", reason="queue_full")
    body = _body(guarded, n=8, temperature=1.5, top_p=1.0, max_tokens=900)

    async def burst():
        seen_ready: list[httpx.Response] = []
        async with httpx.AsyncClient(timeout=120) as client:
            done = asyncio.Event()

            async def poll_ready():
                while not done.is_set():
                    seen_ready.append(await client.get(f"{guarded.url}/ready"))
                    await asyncio.sleep(0.005)

            poller = asyncio.create_task(poll_ready())
            responses = await asyncio.gather(*[
                client.post(f"{guarded.url}/v1/chat/completions", json=body, headers=KEY)
                for _ in range(12)])
            done.set()
            await poller
        return responses, seen_ready

    responses, seen_ready = asyncio.run(burst())
    codes = sorted(r.status_code for r in responses)
    assert set(codes) == {200, 429}, codes
    refused = [r for r in responses if r.status_code == 429]
    served = [r for r in responses if r.status_code == 200]
    assert len(served) >= 2  # the admitted one and the queued one
    for r in refused:
        assert r.headers["retry-after"] == "3"
        error = r.json()["error"]
        assert error["type"] == "rate_limit_error" and error["code"] == "server_overloaded"
        assert "LAPO_MAX_CONCURRENCY" in error["message"] and "1 running" in error["message"]
    for r in served:  # admitted requests finish, whole
        choices = r.json()["choices"]
        assert len(choices) == 8 and all(c["finish_reason"] in ("stop", "length")
                                         for c in choices)
    # While saturated, /ready told the load balancer so (503 "saturated", Retry-After).
    saturated = [r for r in seen_ready if r.status_code == 503]
    assert saturated and all(r.json()["error"]["code"] == "saturated" for r in saturated)
    assert saturated[0].headers["retry-after"] == "3"
    assert saturated[0].json()["queued"] == 1 and saturated[0].json()["in_flight"] == 1
    assert guarded.metric("lapo_requests_rejected_total",
                          reason="queue_full") == refused_before + len(refused)
    assert httpx.get(f"{guarded.url}/ready").status_code == 200
    assert guarded.metric("lapo_admission_active") == 0
    assert guarded.metric("lapo_admission_queue_depth") == 0


def test_body_size_limit(guarded) -> None:
    big = _body(guarded, messages=[{"role": "user", "content": "x" * 9000}])
    r = _post(guarded, big)
    assert r.status_code == 413
    error = r.json()["error"]
    assert error["code"] == "request_too_large" and error["param"] == "body"
    assert "8192" in error["message"] and str(len(httpx.Request(
        "POST", "http://x", json=big).content)) in error["message"]
    # Chunked (no Content-Length): read up to the limit, then refused the same way.
    def chunks():
        payload = httpx.Request("POST", "http://x", json=big).content
        for i in range(0, len(payload), 1000):
            yield payload[i:i + 1000]

    r = httpx.post(f"{guarded.url}/v1/chat/completions", content=chunks(),
                   headers={**KEY, "content-type": "application/json"}, timeout=30)
    assert r.status_code == 413 and "more than 8192" in r.json()["error"]["message"]
    assert _post(guarded, _body(guarded)).status_code == 200  # still serving


def test_cors_only_for_configured_origins(guarded) -> None:
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(f"{guarded.url}/v1/chat/completions", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})

    ok = preflight(ORIGIN)
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == ORIGIN
    other = preflight("https://evil.example")
    assert "access-control-allow-origin" not in other.headers
    r = httpx.post(f"{guarded.url}/v1/chat/completions", json=_body(guarded),
                   headers={**KEY, "Origin": ORIGIN}, timeout=60)
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "x-lapo-budget-source" in r.headers["access-control-expose-headers"]


def test_cors_off_by_default(server) -> None:
    r = httpx.options(f"{server.url}/v1/chat/completions", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers
    assert r.status_code in (405, 400)


def test_logs_carry_no_prompts_or_keys(guarded) -> None:
    marker = "zebra-quartz-91731"
    r = _post(guarded, _body(guarded, messages=[{"role": "user", "content": marker}]),)
    assert r.status_code == 200
    bad = httpx.post(f"{guarded.url}/v1/chat/completions", json=_body(guarded),
                     headers={"Authorization": "Bearer sk-wrong-secret-4242"})
    assert bad.status_code == 401 and "sk-wrong" not in bad.text
    request_id = r.headers["x-request-id"]
    _wait(lambda: request_id in guarded.log_text(), 10)
    log = guarded.log_text()
    assert "POST /v1/chat/completions 200" in log
    assert marker not in log
    assert "sk-guard" not in log and "sk-wrong-secret-4242" not in log
