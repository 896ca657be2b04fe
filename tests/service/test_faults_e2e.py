"""Timeouts, a killed engine, and SIGTERM under streaming load, each on its own live server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time

import httpx
import pytest

pytestmark = pytest.mark.e2e

QUESTION = "Start with 7. Apply in order: +5, *2, -4. What is the final number?"
# Eight choices sampled hot, up to 900 tokens each.
LONG = {"n": 8, "temperature": 1.5, "top_p": 1.0, "max_tokens": 900, "seed": 0}


def _body(server, **kw) -> dict:
    return {"model": server.model, "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": 8, **kw}


def _engine_idle(server, seconds: float = 30) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if (server.metric("vllm:num_requests_running")
                + server.metric("vllm:num_requests_waiting")) == 0:
            return True
        time.sleep(0.2)
    return False


def _stream_events(server, body: dict, events: list) -> None:
    """Read one SSE stream into ``events`` (parsed JSON, or "[DONE]")."""
    with httpx.stream("POST", f"{server.url}/v1/chat/completions", json=body,
                      timeout=120) as r:
        events.append(r.status_code)
        for line in r.iter_lines():
            if line.startswith("data: "):
                data = line[6:]
                events.append(data if data == "[DONE]" else json.loads(data))


@pytest.fixture
def launch(tiny_checkpoint, tmp_path, server_tools):
    served, start, stop = server_tools
    started = []

    def run(**env):
        live = start(served(tiny_checkpoint), tmp_path, **env)
        started.append(live)
        return live

    yield run
    for live in started:
        stop(live)


# One sequence at a time and 16 choices: ~2 s of engine work on this machine for the shipped
# model (0.3 s with 8 choices in parallel, which a fast CI machine finished inside the timeout),
# while the first streamed token still comes within ~50 ms.
SERIAL = {"LAPO_MAX_NUM_SEQS": "1", "LAPO_MAX_N": "16"}


def _sigterm_when_idle_exits_zero_and_frees_the_engine(server) -> None:
    """(Run at the end of the timeout test, on its idle server: one server start fewer.)"""
    import psutil

    engine = server.engine_core_pids()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=60) == 0
    deadline = time.time() + 30
    while any(psutil.pid_exists(p) for p in engine) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                   for p in engine)


def test_request_timeout_aborts_engine_work_then_sigterm_when_idle(launch) -> None:
    server = launch(LAPO_REQUEST_TIMEOUT_S="0.3", **SERIAL)
    slow = {**LONG, "n": 16}
    r = httpx.post(f"{server.url}/v1/chat/completions", json=_body(server, **slow), timeout=60)
    assert r.status_code == 504
    error = r.json()["error"]
    assert error["type"] == "timeout_error" and error["code"] == "request_timeout"
    assert "0.3 s" in error["message"] and "LAPO_REQUEST_TIMEOUT_S" in error["message"]

    events: list = []
    _stream_events(server, _body(server, stream=True, **slow), events)
    assert events[0] == 200
    assert events[-1] != "[DONE]" and events[-1]["error"]["code"] == "request_timeout"
    assert server.metric("lapo_request_timeouts_total") == 2
    assert _engine_idle(server)  # both generations were aborted, not left running
    assert httpx.post(f"{server.url}/v1/chat/completions", json=_body(server),
                      timeout=60).status_code == 200
    _sigterm_when_idle_exits_zero_and_frees_the_engine(server)


def _engine_pid(server) -> int:
    pids = server.engine_core_pids()
    assert len(pids) == 1, pids
    return pids[0]


def test_engine_death_restart_then_exit(launch) -> None:
    # The engine processes `lapo serve` runs by default (vLLM's choice: a worker process
    # beside the engine-core process, which must go down with it).
    server = launch(LAPO_ENGINE_MAX_RESTARTS="1", LAPO_ENGINE_RESTART_BACKOFF_S="0.5",
                    LAPO_DISTRIBUTED_EXECUTOR_BACKEND="auto")
    engine = _engine_pid(server)
    events: list = []
    streamer = threading.Thread(target=_stream_events, args=(server, _body(
        server, stream=True, n=8, temperature=1.5, top_p=1.0, max_tokens=900), events))
    streamer.start()
    deadline = time.time() + 30
    while len(events) < 3 and time.time() < deadline:  # the stream is generating
        time.sleep(0.005)
    os.kill(engine, signal.SIGKILL)

    # At once: not ready, new requests refused with a clear 503 (no hang).
    deadline = time.time() + 5
    while httpx.get(f"{server.url}/ready").status_code == 200 and time.time() < deadline:
        time.sleep(0.02)
    ready = httpx.get(f"{server.url}/ready")
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "engine_unavailable"
    r = httpx.post(f"{server.url}/v1/chat/completions", json=_body(server), timeout=10)
    assert r.status_code == 503 and r.json()["error"]["code"] == "engine_unavailable"
    assert r.headers["retry-after"]

    # The stream that was running ends with an error event, not a silent cut.
    streamer.join(timeout=60)
    assert not streamer.is_alive(), (len(events), events[-1:])
    assert events[0] == 200 and events[-1] != "[DONE]"
    assert events[-1]["error"]["code"] == "engine_unavailable"

    # The supervisor restarts the engine; the service serves again.
    deadline = time.time() + 180
    while httpx.get(f"{server.url}/ready").status_code != 200 and time.time() < deadline:
        time.sleep(0.5)
    assert server.proc.poll() is None
    r = httpx.post(f"{server.url}/v1/chat/completions", json=_body(server), timeout=60)
    assert r.status_code == 200, r.text
    assert server.metric("lapo_engine_restarts_total", result="ok") == 1
    assert server.metric("lapo_engine_up") == 1

    # Past the restart budget the process exits non-zero for its orchestrator.
    os.kill(_engine_pid(server), signal.SIGKILL)
    assert server.proc.wait(timeout=120) == 3


def test_sigterm_drains_streams_then_exits_zero(launch) -> None:
    # The engine runs one sequence at a time, so 6 streams x 4 choices of up to 300 tokens
    # take seconds: SIGTERM arrives while every stream is admitted and most of their work is
    # still ahead (900 tokens each made this test's drain ~50 s of the suite).
    server = launch(LAPO_SHUTDOWN_GRACE_S="60", LAPO_MAX_NUM_SEQS="1")
    url = f"{server.url}/v1/chat/completions"

    async def scenario():
        streams: list[list] = [[] for _ in range(6)]
        async with httpx.AsyncClient(timeout=120) as client:
            async def read(i: int) -> None:
                body = _body(server, stream=True, **{**LONG, "n": 4, "seed": i,
                                                     "max_tokens": 300})
                async with client.stream("POST", url, json=body) as r:
                    streams[i].append(r.status_code)
                    async for line in r.aiter_lines():
                        if line.startswith("data: "):
                            data = line[6:]
                            streams[i].append(data if data == "[DONE]" else json.loads(data))

            readers = [asyncio.create_task(read(i)) for i in range(len(streams))]
            deadline = time.time() + 60
            while min(len(e) for e in streams) < 5 and time.time() < deadline:
                await asyncio.sleep(0.005)  # every stream admitted: status + 4 role chunks
            server.proc.send_signal(signal.SIGTERM)
            # Draining: no new admissions, readiness off, while the streams keep going.
            ready = await client.get(f"{server.url}/ready")
            while ready.status_code == 200 and time.time() < deadline:
                await asyncio.sleep(0.01)
                ready = await client.get(f"{server.url}/ready")
            refused = await client.post(url, json=_body(server))
            await asyncio.gather(*readers)
        return streams, ready, refused

    streams, ready, refused = asyncio.run(scenario())
    assert server.proc.wait(timeout=60) == 0
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "shutting_down"
    assert ready.json()["in_flight"] >= 1  # the checks ran while streams were in flight
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
    for events in streams:  # every admitted stream ran to its end
        assert events[0] == 200 and events[-1] == "[DONE]", events[-2:]
        finals = [e for e in events[1:-1] if e["choices"] and e["choices"][0]["finish_reason"]]
        assert len(finals) == 4
