"""The engine supervisor's restart budget and backoff (fake engines: pure logic; the real
kill -9 test is in test_faults_e2e.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from lapo.service.model import engine_dead
from lapo.service.registry import ModelRegistry
from lapo.service.supervisor import EngineSupervisor


class FakeEngine:
    def __init__(self) -> None:
        self.errored = False
        self.shut = False

    def shutdown(self) -> None:
        self.shut = True


@dataclass
class Handle:
    engine: FakeEngine
    path: str = "m"
    version: str = "v1"
    name: str = "m"
    checkpoint_hash: str | None = None
    manifest: dict | None = None


async def test_restart_then_give_up_after_the_budget() -> None:
    registry = ModelRegistry()
    registry.install(Handle(FakeEngine()))
    loads, gave_up = [], []

    async def reload(dead):
        loads.append(dead)
        return Handle(FakeEngine())

    sup = EngineSupervisor(registry, reload, max_restarts=1, backoff_s=0.0,
                           give_up=lambda: gave_up.append(True), interval_s=0.001)
    runner = asyncio.create_task(sup.run())
    first = registry.active.handle.engine
    first.errored = True
    for _ in range(200):
        await asyncio.sleep(0.001)
        if not engine_dead(registry.active.handle.engine):
            break
    assert first.shut and len(loads) == 1 and not gave_up
    registry.active.handle.engine.errored = True  # dies again: the budget is spent
    await asyncio.wait_for(runner, 2)
    assert gave_up == [True] and sup.gave_up and len(loads) == 1


async def test_failed_restarts_count_and_back_off() -> None:
    registry = ModelRegistry()
    registry.install(Handle(FakeEngine()))
    attempts, gave_up = [], []

    async def reload(dead):
        attempts.append(asyncio.get_running_loop().time())
        raise RuntimeError("no memory")

    sup = EngineSupervisor(registry, reload, max_restarts=3, backoff_s=0.01,
                           give_up=lambda: gave_up.append(True))
    registry.active.handle.engine.errored = True
    assert await sup.recover(registry.active) is False
    assert len(attempts) == 3 and gave_up == [True]
    gaps = [b - a for a, b in zip(attempts, attempts[1:], strict=False)]
    assert gaps[1] > gaps[0]  # 0.02 s then 0.04 s: the delay doubles
