"""Declared-length scheduling on the request path, on the scripted fake engine: a request that
must wait is keyed by its declared budget plus the expected answer (the model's statement
probed first when the request gives none; effort mode reuses it), nothing is probed while a
slot is free, and a request the probe cannot key queues unkeyed. No vLLM engine runs."""

from __future__ import annotations

import pytest
from fake_engine import FakeEngine

from lapo import protocol as p
from lapo.service.request_scope import RequestScope
from lapo.service.schedule import key_request
from lapo.service.schemas import ChatCompletionRequest
from lapo.service.settings import Settings
from lapo.service.state import ServiceState

MESSAGES = [{"role": "user", "content": "What is 3+4?"}]


def _script(call) -> str:
    if call.kind == "statement":
        return p.budget_statement(42)
    return " Seven.</think>7"


def _state(tmp_path, policy: str = "declared", busy: bool = True):
    fake = FakeEngine(_script)
    state = ServiceState.create(Settings(model=tmp_path, served_model_name="tiny",
                                         scheduling=policy, max_concurrency=1))
    state.registry.install(fake.handle())
    if busy:
        state.admission.active = 1  # every slot taken: a new request would wait
    return state, fake


def _req(**kw) -> ChatCompletionRequest:
    return ChatCompletionRequest(model="tiny", messages=MESSAGES, **kw)


async def _key(state, req):
    scope = RequestScope(state, stream=False)
    probe = await key_request(scope, state, req)
    return scope.key, probe


async def test_nothing_is_probed_while_a_slot_is_free(tmp_path) -> None:
    state, fake = _state(tmp_path, busy=False)
    key, probe = await _key(state, _req())
    assert key is None and probe.statement is None and fake.calls == []


@pytest.mark.parametrize("policy", ["fcfs", "random"])
async def test_other_policies_never_probe(tmp_path, policy) -> None:
    state, fake = _state(tmp_path, policy)
    key, _ = await _key(state, _req())
    assert key is None and fake.calls == []


async def test_an_explicit_budget_is_the_key_without_an_engine_call(tmp_path) -> None:
    state, fake = _state(tmp_path)
    for n in (4, 6, 8):
        state.chat.answers.add(n)  # the recent median answer: 6 tokens
    key, probe = await _key(state, _req(reasoning_budget=30))
    assert key == 30 + 6 and probe.statement is None and fake.calls == []


async def test_the_models_own_statement_is_probed_for_the_key(tmp_path) -> None:
    state, fake = _state(tmp_path)
    key, probe = await _key(state, _req())
    assert key == 42  # no answers seen yet: expected answer 0
    assert [c.kind for c in fake.calls] == ["statement"]
    assert probe.statement is None  # self-declared: the choice declares again in its span


async def test_effort_mode_reuses_the_probed_statement_as_its_first_phase(tmp_path) -> None:
    state, fake = _state(tmp_path)
    req = _req(reasoning_effort="low")
    key, probe = await _key(state, req)
    assert key == 21  # scale(42, 0.5)
    assert probe.statement is not None and probe.statement[0] == 42
    model = state.registry.acquire().handle
    response, _, _ = await state.chat.complete(req, model, probe)
    # one statement request in all (the probe's), then the main request with 21 injected
    assert [c.kind for c in fake.calls] == ["statement", "main"]
    assert p.budget_statement(21) in fake.calls[1].prompt_text
    assert response.choices[0].lapo.budget_source == "effort"


async def test_a_request_the_probe_cannot_key_queues_unkeyed(tmp_path) -> None:
    state, fake = _state(tmp_path)
    key, probe = await _key(state, _req(max_tokens=10**6))  # refused by its own work later
    assert key is None and probe.statement is None
