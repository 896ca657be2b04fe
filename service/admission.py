"""Back-pressure: a bounded admission queue in front of the engine.

At most ``max_concurrency`` requests hold a slot; up to ``max_queue`` more wait for one, first
come first served; anything beyond is refused at once (the route answers 429 with
Retry-After) instead of piling up until every request times out. A released slot is handed
straight to the oldest waiter, so a burst can never overtake requests already queued.

Pure asyncio, no engine: the route acquires a slot before it leases the model and returns it
when the response (or the stream) ends.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Saturated(Exception):
    """The queue is full: the request is refused, not queued."""


class Admission:
    def __init__(self, max_concurrency: int, max_queue: int) -> None:
        if max_concurrency < 1 or max_queue < 0:
            raise ValueError("max_concurrency must be >= 1 and max_queue >= 0")
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.active = 0
        self._waiters: deque[asyncio.Future] = deque()

    @property
    def queued(self) -> int:
        return sum(1 for f in self._waiters if not f.done())

    @property
    def saturated(self) -> bool:
        """True when a new request would be refused (every slot busy, the queue full)."""
        return self.active >= self.max_concurrency and self.queued >= self.max_queue

    async def acquire(self) -> None:
        """Take a slot, waiting in line if needed; raise `Saturated` when the line is full."""
        if self.active < self.max_concurrency and not self.queued:
            self.active += 1
            return
        if self.queued >= self.max_queue:
            raise Saturated
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # `release` hands its slot over: `active` is already counted
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot just as we gave up: pass it on
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.active = max(0, self.active - 1)
