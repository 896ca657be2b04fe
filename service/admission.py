"""Back-pressure: a bounded admission queue in front of the engine.

At most ``max_concurrency`` requests hold a slot; up to ``max_queue`` more wait for one;
anything beyond is refused at once (the route answers 429 with Retry-After) instead of piling
up until every request times out. A released slot is handed straight to the next waiter, so a
burst can never overtake requests already queued. Which waiter is next is the scheduling
policy's choice (`lapo.service.scheduling`: first come first served by default, or the
shortest declared work first under a starvation bound).

Pure asyncio, no engine: the route acquires a slot before it leases the model and returns it
when the response (or the stream) ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from lapo.service.scheduling import Waiter, WaitQueue


class Saturated(Exception):
    """The queue is full: the request is refused, not queued."""


@dataclass(frozen=True)
class Admitted:
    """How a request got its slot: seconds it waited, and whether the bound promoted it."""

    waited_s: float = 0.0
    promoted: bool = False


class Admission:
    def __init__(self, max_concurrency: int, max_queue: int, policy: str = "fcfs",
                 starvation_bound_s: float | None = None, default_key: float = 512.0,
                 on_change: Callable[[Admission], None] | None = None) -> None:
        """``on_change``: called after every change of the slots or the line (the metrics'
        gauges: a request is seen waiting as soon as it joins the line)."""
        if max_concurrency < 1 or max_queue < 0:
            raise ValueError("max_concurrency must be >= 1 and max_queue >= 0")
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self.active = 0
        # The declared scheduler's probes (`lapo.service.schedule`): as many as the slots.
        self.probes = asyncio.Semaphore(max_concurrency)
        self.line = WaitQueue(policy, starvation_bound_s, default_key)
        self._on_change = on_change or (lambda _: None)

    @property
    def policy(self) -> str:
        return self.line.policy

    @property
    def queued(self) -> int:
        return len(self.line)

    @property
    def would_wait(self) -> bool:
        """True when a new request would wait in line (every slot busy, or others waiting)."""
        return self.active >= self.max_concurrency or self.queued > 0

    @property
    def saturated(self) -> bool:
        """True when a new request would be refused (every slot busy, the queue full)."""
        return self.active >= self.max_concurrency and self.queued >= self.max_queue

    async def acquire(self, key: float | None = None,
                      keyer: Callable[[], Awaitable[float | None]] | None = None) -> Admitted:
        """Take a slot, waiting in line if needed (``key``: the request's expected work in
        tokens, for the ``declared`` policy); raise `Saturated` when the line is full.

        ``keyer``: how to find the key of a request that must wait (the scheduler's probe).
        It runs only then, while the request waits (placed at the default key meanwhile), and
        moves the waiter to its key when it returns one; it is cancelled if the slot comes
        first, so it never delays a request."""
        if self.active < self.max_concurrency and not self.queued:
            self.active += 1
            self._on_change(self)
            return Admitted()
        if self.queued >= self.max_queue:
            raise Saturated
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        waiter = self.line.push(future, loop.time(), key)
        self._on_change(self)
        probe = None
        if keyer is not None and key is None and self.policy == "declared":
            probe = asyncio.ensure_future(keyer())
            probe.add_done_callback(lambda task: self._rekey(waiter, task))
        try:
            # `release` hands its slot over (`active` is already counted) with the result
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # handed a slot just as we gave up: pass it on
            else:
                self._forget(waiter)
                self._on_change(self)
            raise
        finally:
            if probe is not None and not probe.done():
                probe.cancel()  # the slot came first: its engine request is aborted

    def _rekey(self, waiter: Waiter, probe: asyncio.Future) -> None:
        if probe.cancelled() or probe.exception() is not None:
            return
        key = probe.result()
        if key is not None and waiter in self.line.waiters():
            self.line.rekey(waiter, key)

    def _forget(self, waiter: Waiter) -> None:
        if waiter in self.line.waiters():
            self.line.remove(waiter)

    def release(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = loop.time()
            waiter = self.line.pop(now)
            if waiter is None:
                break
            future: asyncio.Future = waiter.ticket  # type: ignore[assignment]
            if not future.done():
                future.set_result(Admitted(now - waiter.arrived, waiter.promoted))
                self._on_change(self)
                return
        self.active = max(0, self.active - 1)
        self._on_change(self)
