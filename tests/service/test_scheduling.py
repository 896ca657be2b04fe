"""The waiting line's order under each policy and the starvation bound (pure logic, an
injected clock: no wall-clock thresholds)."""

from __future__ import annotations

import asyncio
import random

import pytest

from lapo.service.admission import Admission
from lapo.service.scheduling import WaitQueue


def _drain(q: WaitQueue, now: float) -> list[str]:
    out = []
    while (w := q.pop(now)) is not None:
        out.append(w.ticket)
    return out


def test_fcfs_is_arrival_order() -> None:
    q = WaitQueue("fcfs")
    for i, key in enumerate((300, 20, 100)):
        q.push(f"r{i}", now=float(i), key=key)
    assert _drain(q, 3.0) == ["r0", "r1", "r2"]


def test_declared_is_shortest_expected_work_first_ties_by_arrival() -> None:
    q = WaitQueue("declared", default_key=1000)
    q.push("first-unknown", 0.0)  # no key seen yet: placed at default_key
    q.push("long", 0.5, key=300)
    q.push("short", 1.0, key=20)
    q.push("unknown", 2.0)  # no declaration: the median of the keys seen (300, 20): 160
    q.push("mid", 3.0, key=100)
    q.push("short2", 4.0, key=20)
    assert _drain(q, 5.0) == ["short", "short2", "mid", "unknown", "long", "first-unknown"]


def test_random_ignores_the_key_and_is_seeded() -> None:
    def order(seed: int) -> list[str]:
        q = WaitQueue("random", seed=seed)
        for i in range(8):
            q.push(f"r{i}", float(i), key=i)
        return _drain(q, 9.0)

    assert order(1) == order(1)
    assert sorted(order(1)) == [f"r{i}" for i in range(8)]
    assert any(order(s) != [f"r{i}" for i in range(8)] for s in range(3))


def test_the_bound_promotes_old_waiters_ahead_in_arrival_order() -> None:
    q = WaitQueue("declared", bound_s=10.0)
    q.push("long-old", 0.0, key=500)
    q.push("longer-old", 1.0, key=900)
    q.push("short-new", 9.5, key=5)
    # at t=9.9 nobody has waited 10 s: shortest first
    assert q.pop(9.9).ticket == "short-new"
    q.push("short-newer", 10.5, key=5)
    # at t=11 both old ones have waited >= 10 s: promoted, in arrival order, before the short
    assert _drain(q, 11.0) == ["long-old", "longer-old", "short-newer"]
    assert q.promotions == 2


def test_bound_zero_is_fcfs() -> None:
    q = WaitQueue("declared", bound_s=0.0)
    for i, key in enumerate((300, 20, 100)):
        q.push(f"r{i}", float(i), key=key)
    assert _drain(q, 3.0) == ["r0", "r1", "r2"]


@pytest.mark.parametrize("seed", range(5))
def test_no_later_arrival_overtakes_a_request_that_waited_the_bound(seed: int) -> None:
    """The guarantee, over random arrivals and service: once a waiter has waited the bound,
    every waiter served after that instant and before it arrived earlier than it."""
    rng = random.Random(seed)
    bound = 5.0
    q = WaitQueue("declared", bound_s=bound)
    arrived: dict[str, float] = {}
    now, n = 0.0, 0
    served: list[tuple[float, str]] = []
    while n < 200 or len(q):
        now += rng.expovariate(1.0)
        if n < 200 and rng.random() < 0.6:
            name = f"r{n}"
            q.push(name, now, key=rng.choice((10, 50, 400)))
            arrived[name] = now
            n += 1
        elif len(q):
            w = q.pop(now)
            served.append((now, w.ticket))
    for i, (_, name_i) in enumerate(served):
        for t_j, name_j in served[:i]:
            # name_i had waited the bound when name_j was served: name_j arrived earlier
            if t_j - arrived[name_i] >= bound:
                assert arrived[name_j] < arrived[name_i], (name_j, name_i)
    assert q.promotions > 0  # the bound did fire in this load


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="policy must be one of"):
        WaitQueue("sjf")
    with pytest.raises(ValueError, match="bound must be >= 0"):
        WaitQueue("declared", bound_s=-1)


async def test_admission_hands_the_slot_to_the_shortest_declared_waiter() -> None:
    adm = Admission(max_concurrency=1, max_queue=4, policy="declared")
    await adm.acquire(key=1000)  # running
    order: list[str] = []

    async def waiter(name: str, key: float) -> None:
        admitted = await adm.acquire(key=key)
        assert admitted.waited_s >= 0 and not admitted.promoted
        order.append(name)

    tasks = [asyncio.create_task(waiter(name, key))
             for name, key in (("long", 400), ("short", 20), ("mid", 100))]
    await asyncio.sleep(0)
    assert adm.queued == 3
    for _ in range(3):
        adm.release()
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    assert order == ["short", "mid", "long"]
    adm.release()
    assert adm.active == 0 and adm.queued == 0
