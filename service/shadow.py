"""Shadow baseline: MEASURED tokens saved (method ``shadow``).

A configurable fraction of live requests is also run, after the user's response is complete
and off its path, on the baseline model (the checkpoint LAPO replaced: ``LAPO_SHADOW_MODEL``).
The baseline's reasoning tokens minus ours, on the same prompt and sampling settings, is
counted. Concurrency is bounded; when every slot is busy the shadow run is shed (counted),
never queued, so shadowing can neither delay nor fail a user's request.
"""

from __future__ import annotations

import asyncio
import logging
import random
from typing import TYPE_CHECKING

from lapo.service import metrics
from lapo.service.model import ModelHandle

if TYPE_CHECKING:
    from lapo.service.generation import SamplingSpec

logger = logging.getLogger(__name__)


class ShadowRunner:
    def __init__(self, handle: ModelHandle, fraction: float, concurrency: int,
                 seed: int | None = None) -> None:
        self.handle = handle  # the baseline model
        self.fraction = fraction
        self.slots = asyncio.Semaphore(concurrency)
        self._busy = 0
        self._limit = concurrency
        self._rng = random.Random(seed)
        self._tasks: set[asyncio.Task] = set()

    def maybe_submit(self, served: ModelHandle, messages: list[dict[str, str]],
                     spec: SamplingSpec, served_reasoning: int) -> None:
        """Sample, then run in the background or shed; returns at once."""
        if self._rng.random() >= self.fraction:
            return
        if self._busy >= self._limit:
            metrics.SHADOW.labels("shed").inc()
            return
        self._busy += 1
        metrics.SHADOW_RUNNING.set(self._busy)
        task = asyncio.get_running_loop().create_task(
            self._run(served, messages, spec, served_reasoning))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._busy -= 1
        metrics.SHADOW_RUNNING.set(self._busy)
        self._tasks.discard(task)

    async def _run(self, served: ModelHandle, messages: list[dict[str, str]],
                   spec: SamplingSpec, served_reasoning: int) -> None:
        from lapo.service.generation import ChoiceJob, Prompt, generate_choice

        try:
            prompt = Prompt.chat(messages, self.handle.tok)
            result = await generate_choice(self.handle, ChoiceJob(prompt, spec))
            base = result.counts.reasoning_tokens
            # The four counters of one run change together: no await between them, and
            # /metrics renders on this event loop, so a scrape never sees half an update.
            labels = (served.name, served.version, "shadow")
            metrics.BASELINE.labels(*labels).inc(base)
            metrics.COMPARED.labels(*labels).inc(served_reasoning)
            diff = base - served_reasoning
            (metrics.SAVED if diff >= 0 else metrics.OVERSPENT).labels(*labels).inc(abs(diff))
            metrics.SHADOW.labels("done").inc()
        except asyncio.CancelledError:
            metrics.SHADOW.labels("cancelled").inc()
            raise
        except Exception:
            logger.warning("shadow run failed", exc_info=True)
            metrics.SHADOW.labels("error").inc()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.handle.engine.shutdown()

