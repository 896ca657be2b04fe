"""Property-based fuzzing of the whole HTTP surface from the service's own OpenAPI schema.

Schemathesis generates requests that fit the schema (positive) and requests that break it
(negative) for every operation; half of the chat requests name the served model so they reach
the engine. For anything a client can send: no 5xx, every error in the OpenAI shape, and the
engine still serves afterwards. Bounded: a fixed number of examples per operation and mode.
"""

from __future__ import annotations

import time

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode

pytestmark = pytest.mark.e2e

KEY = {"Authorization": "Bearer sk-test"}
EXAMPLES = {"/v1/chat/completions": 100}  # other operations: 10 per mode
AIM_WITHOUT = ("tools", "tool_choice", "parallel_tool_calls", "response_format",
               "structured_outputs")


def _check_response(case, response) -> None:
    where = f"{case.method} {case.path} body={str(case.body)[:300]!r}"
    assert response.status_code < 500, f"{response.status_code} for {where}: {response.text}"
    if response.status_code >= 400:
        error = response.json().get("error")
        assert isinstance(error, dict), f"not OpenAI-shaped for {where}: {response.text}"
        assert set(error) == {"message", "type", "param", "code"}, error
        assert isinstance(error["message"], str) and error["message"], error


def test_fuzz_http_surface(server) -> None:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    paths = {op.path for op in operations}
    assert {"/v1/chat/completions", "/v1/models", "/ready", "/health"} <= paths
    stats: dict[tuple[str, int], int] = {}

    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @settings(max_examples=EXAMPLES.get(operation.path, 10), deadline=None,
                      database=None, derandomize=True,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode), aim=st.booleans(),
                   authed=st.integers(0, 9))
            def run(case, aim, authed):
                if aim and isinstance(case.body, dict) and "messages" in case.body:
                    case.body["model"] = server.model  # reach the engine, not just 404
                    # Random messages and options are mostly refused by cross-field rules
                    # (null content outside a tool-call turn, a constraint with stop,
                    # tool_choice without tools, ...): aimed cases keep the other fields
                    # random; the rest are fuzzed when not aiming.
                    case.body["messages"] = [{"role": "user", "content": "What is 1+1?"}]
                    for name in AIM_WITHOUT:
                        case.body.pop(name, None)
                headers = KEY if authed else {"Authorization": "Bearer wrong"}
                response = case.call(base_url=server.url, headers=headers, timeout=120)
                key = (case.path, response.status_code)
                stats[key] = stats.get(key, 0) + 1
                _check_response(case, response)

            try:
                run()
            except Unsatisfiable:
                # Negative mode has nothing to break on an operation without inputs.
                assert mode == GenerationMode.NEGATIVE and operation.method.upper() == "GET"

    print("fuzz (path, status): count", dict(sorted(stats.items())))
    chat = "/v1/chat/completions"
    # The fuzzing reached the engine and the validation, not only the auth check.
    assert stats.get((chat, 200), 0) >= 3 and stats.get((chat, 400), 0) >= 10
    assert stats.get((chat, 401), 0) > 0
    # The engine still serves, with nothing left running.
    r = httpx.post(f"{server.url}/v1/chat/completions", headers=KEY, timeout=60, json={
        "model": server.model, "messages": [{"role": "user", "content": "What is 3+4?"}],
        "max_tokens": 20})
    assert r.status_code == 200
    deadline = time.time() + 30
    while server.metric("vllm:num_requests_running") and time.time() < deadline:
        time.sleep(0.2)
    assert server.metric("vllm:num_requests_running") == 0
