"""The admission queue's rules (pure asyncio; the live 429 path is in test_guard_e2e.py)."""

from __future__ import annotations

import asyncio

import pytest

from lapo.service.admission import Admission, Saturated


async def test_slots_then_queue_then_refusal_in_order() -> None:
    adm = Admission(max_concurrency=2, max_queue=2)
    await adm.acquire()
    await adm.acquire()
    assert adm.active == 2 and not adm.saturated
    order: list[int] = []

    async def waiter(i: int) -> None:
        await adm.acquire()
        order.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(2)]
    await asyncio.sleep(0)
    assert adm.queued == 2 and adm.saturated
    with pytest.raises(Saturated):
        await adm.acquire()
    adm.release()  # hands the slot to the oldest waiter, first come first served
    await asyncio.sleep(0)
    assert order == [0] and adm.active == 2 and adm.queued == 1
    adm.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1] and adm.active == 2 and adm.queued == 0
    adm.release()
    adm.release()
    assert adm.active == 0


async def test_cancelled_waiter_leaves_the_line_and_loses_no_slot() -> None:
    adm = Admission(max_concurrency=1, max_queue=3)
    await adm.acquire()
    gone = asyncio.create_task(adm.acquire())
    stays = asyncio.create_task(adm.acquire())
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.gather(gone, return_exceptions=True)
    assert adm.queued == 1
    adm.release()
    await stays
    assert adm.active == 1 and adm.queued == 0
    adm.release()
    assert adm.active == 0


async def test_zero_queue_refuses_as_soon_as_slots_are_busy() -> None:
    adm = Admission(max_concurrency=1, max_queue=0)
    await adm.acquire()
    assert adm.saturated
    with pytest.raises(Saturated):
        await adm.acquire()
    adm.release()
    await adm.acquire()  # free again


def test_invalid_sizes() -> None:
    with pytest.raises(ValueError):
        Admission(0, 1)
    with pytest.raises(ValueError):
        Admission(1, -1)
