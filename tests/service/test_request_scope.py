"""`RequestScope`: a request's admission slot and model lease come back exactly once, on every
path (no engine: a fake model handle and the real admission queue and registry)."""

from __future__ import annotations

import asyncio

import pytest
from fake_engine import FakeEngine

from lapo.service.errors import APIError
from lapo.service.registry import Entry
from lapo.service.request_scope import RequestScope, _ScopedStreamingResponse
from lapo.service.settings import Settings
from lapo.service.state import ServiceState


def _state(max_concurrency: int = 1, max_queue: int = 0) -> tuple[ServiceState, Entry]:
    state = ServiceState.create(Settings(request_timeout_s=30, max_concurrency=max_concurrency,
                                         max_queue=max_queue))
    entry = state.registry.install(FakeEngine({}).handle())
    return state, entry


class _Request:
    """What `until_disconnect` reads: a client that stays until ``gone`` is set."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()

    async def receive(self) -> dict:
        await self.gone.wait()
        return {"type": "http.disconnect"}


def _held(state: ServiceState, entry: Entry) -> tuple[int, int]:
    return state.admission.active, entry.leases


async def test_complete_returns_slot_and_lease_on_success_and_on_error() -> None:
    state, entry = _state()
    scope = RequestScope.open(state, stream=False)

    async def work(model):
        assert _held(state, entry) == (1, 1)
        return "ok"

    assert await scope.complete(_Request(), work) == "ok"
    assert _held(state, entry) == (0, 0)

    async def fails(model):
        raise APIError(400, "bad")

    with pytest.raises(APIError):
        await RequestScope.open(state, stream=False).complete(_Request(), fails)
    assert _held(state, entry) == (0, 0)


async def test_queue_full_is_a_429_and_holds_nothing() -> None:
    state, entry = _state(max_concurrency=1, max_queue=0)
    gate = asyncio.Event()

    async def slow(model):
        await gate.wait()

    first = asyncio.ensure_future(RequestScope.open(state, stream=False).complete(
        _Request(), slow))
    await asyncio.sleep(0)
    with pytest.raises(APIError) as err:
        await RequestScope.open(state, stream=False).complete(_Request(), slow)
    assert err.value.status == 429 and err.value.headers["Retry-After"]
    assert _held(state, entry) == (1, 1)
    gate.set()
    await first
    assert _held(state, entry) == (0, 0)


async def test_a_stream_that_fails_validation_holds_nothing() -> None:
    state, entry = _state()

    async def invalid(model):
        raise APIError(400, "bad", param="n")

    with pytest.raises(APIError):
        await RequestScope.open(state, stream=True).open_stream(_Request(), invalid)
    assert _held(state, entry) == (0, 0)


async def test_a_client_gone_while_queued_frees_its_place() -> None:
    state, entry = _state(max_concurrency=1, max_queue=1)
    gate = asyncio.Event()

    async def slow(model):
        await gate.wait()

    running = asyncio.ensure_future(RequestScope.open(state, stream=False).complete(
        _Request(), slow))
    await asyncio.sleep(0)
    client = _Request()

    async def start(model):
        raise AssertionError("never admitted")

    queued = asyncio.ensure_future(RequestScope.open(state, stream=True).open_stream(
        client, start))
    await asyncio.sleep(0.01)
    assert state.admission.queued == 1
    client.gone.set()
    with pytest.raises(APIError) as err:
        await queued
    assert err.value.status == 499 and state.admission.queued == 0
    gate.set()
    await running
    assert _held(state, entry) == (0, 0)


@pytest.mark.parametrize("how", ["send_fails", "disconnect_first"])
async def test_a_stream_body_that_never_starts_still_returns_slot_and_lease(how) -> None:
    """Starlette may cancel a streaming response before iterating its body (the client
    went away first): the generator's own `finally` never runs, the response's does."""
    state, entry = _state()

    async def start(model):
        async def body():
            yield "data: x\n\n"
        return body()

    response = await RequestScope.open(state, stream=True).open_stream(_Request(), start)
    assert isinstance(response, _ScopedStreamingResponse)
    assert _held(state, entry) == (1, 1)
    scope = {"type": "http", "asgi": {"spec_version": "2.3"}}

    async def receive() -> dict:
        return {"type": "http.disconnect"}

    async def send(message) -> None:
        if how == "send_fails":
            raise OSError("the client is gone")
        await asyncio.Event().wait()  # never returns: the disconnect wins

    if how == "send_fails":
        with pytest.raises(OSError):
            await response(scope, receive, send)
    else:
        await response(scope, receive, send)
    assert _held(state, entry) == (0, 0)
