"""End to end: a live server on the real vLLM engine, driven by the `openai` client."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest

from lapo import protocol as p

pytestmark = pytest.mark.e2e

QUESTION = "Start with 7. Apply in order: +5, *2, -4. What is the final number?"
MESSAGES = [{"role": "user", "content": QUESTION}]


def _check_lapo(info: dict, usage_reasoning: int | None = None) -> None:
    assert set(info) >= {"declared_reasoning_tokens", "actual_reasoning_tokens",
                         "budget_source", "budget_error", "enforced"}
    assert info["budget_source"] in {"model", "request", "effort", "none"}
    assert info["actual_reasoning_tokens"] >= 0
    if info["declared_reasoning_tokens"] is None:
        assert info["budget_error"] is None
    else:
        expected = ((info["actual_reasoning_tokens"] - info["declared_reasoning_tokens"])
                    / info["declared_reasoning_tokens"])
        assert info["budget_error"] == pytest.approx(expected, abs=1e-3)


def test_health_ready_models(server) -> None:
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    assert httpx.get(f"{server.url}/ready").json()["status"] == "ready"
    models = server.client().models.list()
    assert [m.id for m in models.data] == [server.model]
    assert models.data[0].model_extra["version"]


def test_non_streaming(server) -> None:
    client = server.client()
    raw = client.chat.completions.with_raw_response.create(
        model=server.model, messages=MESSAGES, max_tokens=300, temperature=0.6, seed=1)
    resp = raw.parse()
    choice = resp.choices[0]
    extra = choice.message.model_extra
    assert extra["reasoning_content"] == extra["reasoning"]
    assert p.THINK_CLOSE not in (choice.message.content or "")
    assert p.THINK_CLOSE not in extra["reasoning_content"]
    info = choice.model_extra["lapo"]
    _check_lapo(info)
    details = resp.usage.completion_tokens_details
    assert details.reasoning_tokens == info["reasoning_tokens"]
    assert resp.usage.completion_tokens >= details.reasoning_tokens
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    assert resp.system_fingerprint.startswith("lapo-")
    # Headers carry the same numbers for a single choice.
    assert raw.headers["x-lapo-actual-reasoning-tokens"] == str(info["actual_reasoning_tokens"])
    assert raw.headers["x-lapo-budget-source"] == info["budget_source"]


def _collect_stream(stream):
    reasoning, content, finals, usage, order = "", "", {}, None, []
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            extra = c.delta.model_extra or {}
            if extra.get("reasoning_content"):
                assert extra["reasoning"] == extra["reasoning_content"]
                reasoning += extra["reasoning_content"]
                order.append("r")
            if c.delta.content:
                content += c.delta.content
                order.append("c")
            if c.finish_reason is not None:
                finals[c.index] = (c.finish_reason, c.model_extra["lapo"])
    return reasoning, content, finals, usage, order


def test_streaming_with_usage(server) -> None:
    stream = server.client().chat.completions.create(
        model=server.model, messages=MESSAGES, max_tokens=300, stream=True,
        stream_options={"include_usage": True}, seed=2)
    reasoning, content, finals, usage, order = _collect_stream(stream)
    assert "".join(order) == "".join(sorted(order, key=lambda x: x != "r"))  # r... then c...
    assert reasoning and p.THINK_CLOSE not in reasoning + content
    finish, info = finals[0]
    _check_lapo(info)
    assert usage is not None
    assert usage.completion_tokens_details.reasoning_tokens == info["reasoning_tokens"]


def test_streaming_without_usage_ends_with_done(server) -> None:
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", timeout=120,
                      headers={"Authorization": "Bearer sk-test"},
                      json={"model": server.model, "messages": MESSAGES, "max_tokens": 120,
                            "stream": True}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    bodies = [json.loads(line[6:]) for line in lines[:-1]]
    assert all("usage" not in b for b in bodies)
    assert bodies[-1]["choices"][0]["finish_reason"] in {"stop", "length"}
    assert "lapo" in bodies[-1]["choices"][0]


def test_n2_seeded_and_stop(server) -> None:
    client = server.client()
    resp = client.chat.completions.create(model=server.model, messages=MESSAGES, n=2,
                                          max_tokens=200, seed=5)
    assert [c.index for c in resp.choices] == [0, 1]
    assert resp.usage.completion_tokens_details.reasoning_tokens == sum(
        c.model_extra["lapo"]["reasoning_tokens"] for c in resp.choices)
    # stop: generation ends at the first stop string, which is not returned.
    resp = client.chat.completions.create(model=server.model, messages=MESSAGES,
                                          max_tokens=200, stop=["="], seed=5)
    choice = resp.choices[0]
    text = choice.message.model_extra["reasoning_content"] + (choice.message.content or "")
    assert "=" not in text
    assert choice.finish_reason == "stop"


def test_explicit_budget(server) -> None:
    resp = server.client().chat.completions.create(
        model=server.model, messages=MESSAGES, max_tokens=300, seed=3,
        extra_body={"reasoning_budget": 40})
    info = resp.choices[0].model_extra["lapo"]
    assert info["budget_source"] == "request"
    assert info["declared_reasoning_tokens"] == 40
    _check_lapo(info)
    # The injected statement is in the prompt, not in the reasoning returned.
    assert p.parse_budget(resp.choices[0].message.model_extra["reasoning_content"]) is None


@pytest.mark.parametrize("effort", ["low", "high"])
def test_effort(server, effort: str) -> None:
    """Effort mode scales the number the model itself declares (greedy: the same number as
    an auto-mode request declares) by the effort's factor and re-injects it."""
    from lapo.service.budget import scale
    from lapo.service.settings import Settings

    client = server.client()
    auto = client.chat.completions.create(model=server.model, messages=MESSAGES,
                                          max_tokens=300, temperature=0)
    own = auto.choices[0].model_extra["lapo"]
    if own["budget_source"] != "model":
        pytest.skip("the served checkpoint does not declare budgets (not LAPO-trained)")
    resp = client.chat.completions.create(model=server.model, messages=MESSAGES,
                                          max_tokens=300, temperature=0,
                                          reasoning_effort=effort)
    info = resp.choices[0].model_extra["lapo"]
    _check_lapo(info)
    assert info["budget_source"] == "effort"
    factor = Settings().effort_factors[effort]
    assert info["declared_reasoning_tokens"] == scale(own["declared_reasoning_tokens"], factor)


def test_hard_cap_forces_the_answer(server) -> None:
    budget = 2
    resp = server.client().chat.completions.create(
        model=server.model, messages=MESSAGES, max_tokens=300, seed=6,
        extra_body={"reasoning_budget": budget, "budget_enforcement": "hard"})
    info = resp.choices[0].model_extra["lapo"]
    cap = int(budget * 1.25 + 0.999) + 8
    # Three operations need about 40 reasoning tokens in the served model's words (far more
    # for the random-weight fallback), so a cap of 11 must cut the reasoning, at exactly
    # cap budgeted tokens, then the forced </think>.
    assert info["enforced"] is True
    assert info["actual_reasoning_tokens"] == cap
    assert info["budget_source"] == "request" and info["declared_reasoning_tokens"] == budget
    assert resp.choices[0].finish_reason in {"stop", "length"}
    _check_lapo(info)


ERROR_CASES = [
    # (body changes, status, param, code)
    ({"foo": 1}, 400, "foo", "unsupported_parameter"),
    ({"tools": []}, 400, "tools", "invalid_value"),  # tools: at least one
    ({"messages": []}, 400, "messages", "invalid_value"),
    ({"messages": [{"role": "robot", "content": "x"}]}, 400, "messages.0.role", None),
    ({"messages": [{"role": "user"}]}, 400, "messages.0.content", None),
    ({"temperature": 5}, 400, "temperature", "invalid_value"),
    ({"top_p": 0}, 400, "top_p", "invalid_value"),
    ({"n": 99}, 400, "n", "invalid_value"),
    ({"max_tokens": 0}, 400, "max_tokens", "invalid_value"),
    ({"max_tokens": 100000}, 400, "max_tokens", "context_length_exceeded"),
    ({"max_completion_tokens": 100000}, 400, "max_completion_tokens",
     "context_length_exceeded"),
    ({"messages": [{"role": "user", "content": "9 " * 3000}]}, 400, "messages",
     "context_length_exceeded"),
    ({"reasoning_budget": 0}, 400, "reasoning_budget", "invalid_value"),
    ({"reasoning_budget": 10**6}, 400, "reasoning_budget", "invalid_value"),
    ({"reasoning_effort": "extreme"}, 400, "reasoning_effort", None),
    ({"stop": ["a", "b", "c", "d", "e"]}, 400, "stop", "invalid_value"),
    ({"stream_options": {"include_usage": True}}, 400, None, None),
    ({"model": "gpt-4"}, 404, "model", "model_not_found"),
]


@pytest.mark.parametrize(("change", "status", "param", "code"), ERROR_CASES)
def test_errors_are_openai_shaped(server, change, status, param, code) -> None:
    body = {"model": server.model, "messages": MESSAGES, "max_tokens": 16, **change}
    r = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=60,
                   headers={"Authorization": "Bearer sk-test"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"] and "Traceback" not in err["message"]
    if param is not None:
        assert err["param"] == param
    if code is not None:
        assert err["code"] == code
    # Out-of-range values are named with the field and the value given.
    if code == "invalid_value" and param in change:
        assert param in err["message"]
        if isinstance(change[param], int | float):
            assert str(change[param]) in err["message"]


@pytest.mark.parametrize(("messages", "param", "expected"), [
    ([{"role": "user", "content": "hi"}] * 65, "messages", ("at most 64", "got 65")),
    ([{"role": "user", "content": "x" * 32_001}], "messages.0.content",
     ("at most 32000 characters", "got 32001")),
])
def test_message_limits_name_limit_and_value(server, messages, param, expected) -> None:
    r = httpx.post(f"{server.url}/v1/chat/completions", timeout=60,
                   headers={"Authorization": "Bearer sk-test"},
                   json={"model": server.model, "messages": messages, "max_tokens": 4})
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == param and err["code"] == "invalid_value"
    assert all(part in err["message"] for part in expected), err["message"]


def test_openai_client_raises_typed_errors(server) -> None:
    client = server.client()
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model=server.model, messages=MESSAGES, n=99)
    assert "at most" in str(exc.value) and "99" in str(exc.value)
    with pytest.raises(openai.AuthenticationError):
        server.client(api_key="wrong").chat.completions.create(model=server.model,
                                                              messages=MESSAGES)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=MESSAGES)


def test_engine_still_serves_after_errors(server) -> None:
    for body in ({"messages": []}, {"temperature": -1}, {"n": 0}):
        httpx.post(f"{server.url}/v1/chat/completions", timeout=30,
                   json={"model": server.model, "messages": MESSAGES, **body},
                   headers={"Authorization": "Bearer sk-test"})
    resp = server.client().chat.completions.create(model=server.model, messages=MESSAGES,
                                                   max_tokens=8)
    assert resp.choices[0].finish_reason in {"stop", "length"}


def test_disconnect_aborts_engine_requests(server) -> None:
    """Clients that vanish mid-stream (and mid non-stream) leave nothing running."""

    async def streamer():
        async with httpx.AsyncClient(timeout=60) as client:
            async with client.stream("POST", f"{server.url}/v1/chat/completions",
                                     headers={"Authorization": "Bearer sk-test"},
                                     json={"model": server.model, "messages": MESSAGES,
                                           "max_tokens": 900, "stream": True,
                                           "temperature": 1.0}) as r:
                async for _ in r.aiter_lines():
                    break  # read one event, then drop the connection

    async def impatient():
        async with httpx.AsyncClient(timeout=0.3) as client:
            try:
                await client.post(f"{server.url}/v1/chat/completions",
                                  headers={"Authorization": "Bearer sk-test"},
                                  json={"model": server.model, "messages": MESSAGES,
                                        "max_tokens": 900, "temperature": 1.0})
            except httpx.TimeoutException:
                pass

    async def burst():
        await asyncio.gather(*[streamer() for _ in range(6)], *[impatient() for _ in range(4)])

    asyncio.run(burst())
    deadline = time.time() + 30
    running = None
    while time.time() < deadline:
        running = server.metric("vllm:num_requests_running") + server.metric(
            "vllm:num_requests_waiting")
        if running == 0:
            break
        time.sleep(0.5)
    assert running == 0
