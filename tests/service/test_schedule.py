"""Declared-length scheduling on the request path, on the scripted fake engine: a request that
must wait is keyed, while it waits, by its declared budget plus the expected answer (the
model's statement probed when the request gives none; effort mode reuses it); nothing is
probed while a slot is free, a probe the slot overtakes is cancelled, and a request the probe
cannot key stays at the default. No vLLM engine runs."""

from __future__ import annotations

import asyncio

import pytest
from fake_engine import FakeEngine

from lapo import protocol as p
from lapo.service.admission import Admission
from lapo.service.request_scope import RequestScope
from lapo.service.schedule import request_keyer
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
    keyer = request_keyer(scope, state, req)
    returned = await keyer()
    assert returned == scope.key
    return scope.key, scope.probe


async def test_nothing_is_probed_while_a_slot_is_free(tmp_path) -> None:
    state, fake = _state(tmp_path, busy=False)
    scope = RequestScope(state, stream=False)
    await state.admission.acquire(None, request_keyer(scope, state, _req()))
    assert scope.key is None and fake.calls == []


@pytest.mark.parametrize("policy", ["fcfs", "random"])
async def test_other_policies_never_probe(tmp_path, policy) -> None:
    state, _ = _state(tmp_path, policy)
    assert request_keyer(RequestScope(state, stream=False), state, _req()) is None


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


async def test_a_waiter_moves_to_its_key_when_the_probe_returns() -> None:
    adm = Admission(max_concurrency=1, max_queue=4, policy="declared")
    await adm.acquire()
    answers = {name: asyncio.Event() for name in ("long", "short")}
    order: list[str] = []

    def keyer(name: str, key: float):
        async def probe() -> float:
            await answers[name].wait()
            return key
        return probe

    async def waiter(name: str, key: float) -> None:
        await adm.acquire(None, keyer(name, key))
        order.append(name)

    tasks = [asyncio.create_task(waiter("long", 400)),
             asyncio.create_task(waiter("short", 20))]
    await asyncio.sleep(0)
    for name in ("long", "short"):
        answers[name].set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    adm.release()  # the short one, keyed after the long one arrived, goes first
    adm.release()
    await asyncio.gather(*tasks)
    assert order == ["short", "long"]


async def test_a_probe_the_slot_overtakes_is_cancelled() -> None:
    adm = Admission(max_concurrency=1, max_queue=4, policy="declared")
    await adm.acquire()
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def slow_probe() -> float:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 1.0

    task = asyncio.create_task(adm.acquire(None, slow_probe))
    await started.wait()
    adm.release()  # the slot comes before the key
    admitted = await task
    await asyncio.wait_for(cancelled.wait(), 5)
    assert admitted.waited_s >= 0 and adm.active == 1 and adm.queued == 0
