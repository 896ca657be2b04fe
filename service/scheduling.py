"""Scheduling: which waiting request gets the next free slot.

``fcfs`` serves waiters in arrival order. ``declared`` serves the shortest expected work first
(a request's key: its declared reasoning budget plus the answer it is expected to write;
shortest-job-first minimises mean waiting time when requests must wait). ``random`` orders by
a random key drawn at arrival: the benchmark's control for how much of ``declared``'s gain
comes from the declaration being right. Ties keep arrival order.

The starvation bound: a waiter that has waited ``bound_s`` or more is promoted; promoted
waiters go before every other waiter, in arrival order among themselves. So once a request
has waited the bound, no later arrival overtakes it: its wait is at most the bound plus the
time the slots take to serve the promoted waiters ahead of it. ``bound_s = 0`` is FCFS.

Pure logic with an injected clock: `lapo.service.admission` keeps the slots and futures.
"""

from __future__ import annotations

import random
import statistics
from collections import deque
from dataclasses import dataclass
from typing import Any

POLICIES = ("fcfs", "declared", "random")


def length_bucket(tokens: float | None, edges: tuple[int, ...], missing: str = "unknown") -> str:
    """The bucket label of a length: "le_N" for the first upper edge N it fits, "gt_LAST"
    beyond the last edge, ``missing`` for no length (metrics and the scheduling benchmark).

    >>> length_bucket(40, (32, 64)), length_bucket(5000, (32, 64)), length_bucket(None, (32,))
    ('le_64', 'gt_64', 'unknown')
    """
    if tokens is None:
        return missing
    for edge in edges:
        if tokens <= edge:
            return f"le_{edge}"
    return f"gt_{edges[-1]}"


@dataclass(eq=False)
class Waiter:
    """One waiting request: ``key`` is its expected remaining work in tokens (None: unknown,
    placed at ``default_key``)."""

    seq: int
    arrived: float
    key: float | None = None
    order_key: float = 0.0
    promoted: bool = False
    ticket: object = None


class WaitQueue:
    """The waiting line of one admission gate, ordered by ``policy``."""

    def __init__(self, policy: str = "fcfs", bound_s: float | None = None,
                 default_key: float = 512.0, seed: int = 0) -> None:
        if policy not in POLICIES:
            raise ValueError(f"scheduling policy must be one of {POLICIES}, got {policy!r}")
        if bound_s is not None and bound_s < 0:
            raise ValueError(f"starvation bound must be >= 0 seconds, got {bound_s}")
        self.policy, self.bound_s, self.default_key = policy, bound_s, default_key
        # Keys seen lately: a waiter not (yet) keyed is placed at their median, mid-line, not
        # behind every keyed one (``default_key`` until a key is seen).
        self._keys = RunningMedian()
        self._rng = random.Random(seed)
        self._waiters: list[Waiter] = []
        self._seq = 0
        self.promotions = 0  # waiters the bound promoted, ever

    def __len__(self) -> int:
        return len(self._waiters)

    def push(self, ticket: object, now: float, key: float | None = None) -> Waiter:
        """Add a waiter that arrived at ``now``."""
        self._seq += 1
        w = Waiter(self._seq, now, key, ticket=ticket)
        if self.policy == "declared":
            w.order_key = self.unknown_key() if key is None else key
            if key is not None:
                self._keys.add(key)
        elif self.policy == "random":
            w.order_key = self._rng.random()
        self._waiters.append(w)
        return w

    def rekey(self, waiter: Waiter, key: float) -> None:
        """A waiting request's key became known (the scheduler's probe returned)."""
        waiter.key = key
        self._keys.add(key)
        if self.policy == "declared":
            waiter.order_key = key

    def unknown_key(self) -> float:
        """Where a waiter without a key is placed: the median of recent keys."""
        return self._keys.value() if len(self._keys) else self.default_key

    def remove(self, waiter: Waiter) -> None:
        self._waiters.remove(waiter)

    def promote(self, now: float) -> list[Waiter]:
        """Promote every waiter that has now waited the bound; returns the newly promoted."""
        if self.bound_s is None or self.policy == "fcfs":
            return []  # under FCFS nobody is overtaken: nothing to promote
        fresh = [w for w in self._waiters
                 if not w.promoted and now - w.arrived >= self.bound_s]
        for w in fresh:
            w.promoted = True
        self.promotions += len(fresh)
        return fresh

    def pop(self, now: float) -> Waiter | None:
        """The waiter the next free slot goes to (promoted first, then by policy), removed."""
        if not self._waiters:
            return None
        self.promote(now)
        promoted = [w for w in self._waiters if w.promoted]
        if promoted:
            best = min(promoted, key=lambda w: w.seq)
        elif self.policy == "fcfs":
            best = min(self._waiters, key=lambda w: w.seq)
        else:
            best = min(self._waiters, key=lambda w: (w.order_key, w.seq))
        self._waiters.remove(best)
        return best

    def waiters(self) -> list[Waiter]:
        return list(self._waiters)


@dataclass(frozen=True)
class Scheduled:
    """How a request got its slot, for the work it then does: seconds it waited, and the
    statement the scheduler's probe wrote on ``model`` (effort mode reuses it there only)."""

    waited_s: float = 0.0
    statement: tuple[int | None, int] | None = None
    model: Any = None

    def statement_for(self, model: Any) -> tuple[int | None, int] | None:
        return self.statement if model is self.model else None


class RunningMedian:
    """The median of the last ``size`` values (0 before any).

    >>> m = RunningMedian(3)
    >>> for v in (5, 1, 9, 7): m.add(v)
    >>> m.value()
    7
    """

    def __init__(self, size: int = 256) -> None:
        self._values: deque[float] = deque(maxlen=size)

    def add(self, value: float) -> None:
        self._values.append(value)

    def value(self) -> float:
        return statistics.median(self._values) if self._values else 0

    def __len__(self) -> int:
        return len(self._values)
