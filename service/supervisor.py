"""Engine faults: notice a dead engine at once, restart it with bounded retries, or give up.

vLLM's engine core runs in its own process; when it dies, ``AsyncLLM.errored`` turns true
(vLLM's monitor thread watches the process) and every request on it raises. The routes check
`engine_dead` before admitting (503 at once, `/ready` too); this supervisor polls the active
engine, frees the dead one, and loads the same checkpoint again. Restarts are counted over the
process's life: after ``max_restarts`` of them (a crash loop), or when a restart fails that
many times, it calls ``give_up`` (the server exits non-zero so an orchestrator restarts it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from lapo.service import metrics
from lapo.service.model import ModelHandle, engine_dead
from lapo.service.registry import Entry, ModelRegistry

if TYPE_CHECKING:
    from vllm.v1.engine.async_llm import AsyncLLM

logger = logging.getLogger(__name__)


class EngineSupervisor:
    def __init__(self, registry: ModelRegistry,
                 reload: Callable[[ModelHandle], Awaitable[ModelHandle]],
                 max_restarts: int, backoff_s: float, give_up: Callable[[], None],
                 interval_s: float = 0.25) -> None:
        self.registry, self.reload, self.give_up = registry, reload, give_up
        self.max_restarts, self.backoff_s, self.interval_s = max_restarts, backoff_s, interval_s
        self.attempts = 0
        self.restarting = False
        self.gave_up = False

    async def run(self) -> None:
        while not self.gave_up:
            await asyncio.sleep(self.interval_s)
            entry = self.registry.active
            if entry is not None and entry.handle is not None and engine_dead(
                    entry.handle.engine):
                await self.recover(entry)

    async def recover(self, entry: Entry) -> bool:
        """Replace ``entry``'s dead engine; False when the supervisor gave up."""
        metrics.ENGINE_UP.set(0)
        self.restarting = True
        dead = entry.handle
        logger.error("the engine serving %s (version %s) died", dead.path, dead.version)
        try:
            fail_in_flight(dead.engine)
            await asyncio.to_thread(_shutdown_quietly, dead.engine)
            while self.attempts < self.max_restarts:
                delay = self.backoff_s * 2 ** self.attempts
                self.attempts += 1
                logger.warning("restarting the engine in %.1f s (restart %d of at most %d)",
                               delay, self.attempts, self.max_restarts)
                await asyncio.sleep(delay)
                try:
                    handle = await self.reload(dead)
                except Exception:
                    metrics.ENGINE_RESTARTS.labels("failed").inc()
                    logger.exception("engine restart failed")
                    continue
                entry.handle = handle
                metrics.ENGINE_RESTARTS.labels("ok").inc()
                metrics.ENGINE_UP.set(1)
                logger.info("engine restarted; serving version %s again", handle.version)
                return True
            self.gave_up = True
            logger.critical("the engine died and %d restarts are used up; exiting so the "
                            "orchestrator can restart the service", self.max_restarts)
            self.give_up()
            return False
        finally:
            self.restarting = False


def fail_in_flight(engine: AsyncLLM) -> None:
    """End every request still waiting on a dead engine with `EngineDeadError`.

    vLLM marks the engine dead when its process exits, but requests already waiting for
    output are not woken (the output socket just goes quiet); without this they would hang.
    Runs on the event loop (the request queues are asyncio objects).
    """
    processor = getattr(engine, "output_processor", None)
    if processor is None:  # not a vLLM AsyncLLM
        return
    try:
        from vllm.v1.engine.exceptions import EngineDeadError

        processor.propagate_error(EngineDeadError())
    except Exception:  # already torn down
        logger.debug("could not fail in-flight requests", exc_info=True)


def _shutdown_quietly(engine: AsyncLLM) -> None:
    try:
        engine.shutdown()
    except Exception:  # it is dead already; freeing what is left is best effort
        logger.debug("shutdown of a dead engine raised", exc_info=True)
