"""End to end: under a burst on the real engine, a short-declared request queued behind long
ones finishes first with ``LAPO_SCHEDULING=declared`` and last with ``fcfs``.

One admission slot per server (``LAPO_MAX_CONCURRENCY=1``): a long request runs, two more long
ones queue, then a short one. No request gives a budget: under ``declared`` each waiting
request's key is the budget the model itself declares (the scheduler's probe), so the order
comes from the model's own predictions (the default model declares ~40 tokens for a two-step
problem and ~300 for a six-step one)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from lapo.task import generate

pytestmark = pytest.mark.e2e

_PROBLEMS = generate("heldout", 3, seed=3)
LONG = [p.question for p in _PROBLEMS if p.level == 5]
SHORT = next(p.question for p in _PROBLEMS if p.level == 1)


@pytest.fixture(scope="module", params=["fcfs", "declared"])
def live(request, tiny_checkpoint, tmp_path_factory, server_tools):
    served_checkpoint, start_server, stop_server = server_tools
    server = start_server(served_checkpoint(tiny_checkpoint), tmp_path_factory.mktemp("sched"),
                          LAPO_MAX_CONCURRENCY="1", LAPO_SCHEDULING=request.param,
                          LAPO_API_KEYS="")
    try:
        yield request.param, server
    finally:
        stop_server(server)


async def _burst(server) -> tuple[list[str], dict[str, dict]]:
    """L1 runs (900 tokens, ignore_eos); L2, L3 queue; then S queues. Returns the finish
    order and each lapo object."""
    order: list[str] = []
    lapo: dict[str, dict] = {}

    async def one(client: httpx.AsyncClient, name: str, question: str, **extra) -> None:
        r = await client.post("/v1/chat/completions", json={
            "model": server.model, "messages": [{"role": "user", "content": question}],
            "max_tokens": 400, "seed": 1, "temperature": 0.6, **extra})
        assert r.status_code == 200, r.text
        order.append(name)
        lapo[name] = r.json()["choices"][0]["lapo"]

    async def until(queued: int, active: int = 1) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            scrape = server.scrape()
            if (scrape("lapo_admission_queue_depth") == queued
                    and scrape("lapo_admission_active") == active):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"queue never reached {queued}")

    async with httpx.AsyncClient(base_url=server.url, timeout=300) as client:
        # L1 holds the slot long enough for the others to queue behind it (900 tokens)
        tasks = [asyncio.create_task(one(client, "L1", LONG[0], max_tokens=900,
                                         ignore_eos=True))]
        await until(0)
        for i, name in enumerate(("L2", "L3")):
            tasks.append(asyncio.create_task(one(client, name, LONG[1 + i % 2])))
            await until(i + 1)
        tasks.append(asyncio.create_task(one(client, "S", SHORT)))
        await until(3)
        await asyncio.gather(*tasks)
    return order, lapo


def test_a_short_declared_request_overtakes_only_under_declared(live) -> None:
    policy, server = live
    order, lapo = asyncio.run(_burst(server))
    assert order[0] == "L1"
    if policy == "declared":
        # the model declared less for the short problem than for the long ones
        assert lapo["S"]["declared_reasoning_tokens"] < min(
            lapo[n]["declared_reasoning_tokens"] for n in ("L2", "L3"))
        assert order == ["L1", "S", "L2", "L3"], order
    else:
        assert order == ["L1", "L2", "L3", "S"], order
    # every waiting request says how long it waited; the first ran at once
    assert lapo["L1"]["queue_wait_s"] < 0.05
    assert all(lapo[n]["queue_wait_s"] > 0 for n in ("L2", "L3", "S"))
    scrape = server.scrape()
    assert scrape("lapo_queue_wait_seconds_count", policy=policy) == 4
    assert scrape("lapo_scheduler_promotions_total") == 0  # the 30 s bound never fired
