"""The served model and its versions: atomic hot-swap, draining, rollback.

Requests take a lease on the active `ModelHandle` when they start and return it when their
response (or stream) ends, so a swap can switch the active handle atomically (one attribute
assignment on the event loop) while requests already running finish on the old one; the old
engine is shut down only once its last lease is returned (or the drain timeout passes).

Strategies:

- ``side_by_side`` (default): load the new checkpoint in a second engine beside the old one,
  warm it with a probe generation, switch, drain the old one, free it. No request waits.
- ``replace`` (when memory does not allow two engines): stop admitting (503 with
  Retry-After), drain, free the old engine, load and warm the new one, resume. Requests that
  were admitted still finish; none fails mid-flight.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from lapo.service import metrics
from lapo.service.model import ModelHandle

logger = logging.getLogger(__name__)


class SwapInProgress(RuntimeError):
    pass


@dataclass
class Entry:
    version: str
    path: str
    manifest: dict
    loaded_at: float
    state: str  # active, draining, retired, failed
    handle: ModelHandle | None = None
    leases: int = 0
    labels: tuple[str, str, str] = ("", "", "")  # model, version, checkpoint hash
    drained: asyncio.Event = field(default_factory=asyncio.Event)
    think: dict | None = None  # the checkpoint's think profile, in short

    def summary(self) -> dict:
        keep = ("kind", "stage", "checkpoint_hash", "code_version", "created")
        return {
            "version": self.version, "path": self.path, "state": self.state,
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
            "manifest": {k: self.manifest.get(k) for k in keep if k in self.manifest},
            "think_profile": self.think,
            "in_flight": self.leases,
        }


class ModelRegistry:
    def __init__(self, drain_timeout_s: float = 120.0) -> None:
        self.active: Entry | None = None
        self.history: list[Entry] = []
        self.admitting = True
        self.drain_timeout_s = drain_timeout_s
        self._swap_lock = asyncio.Lock()
        # The running swap, observable (GET /admin/models): its target and current phase.
        self.swap_target: str | None = None
        self.swap_phase: str | None = None

    @property
    def swapping(self) -> bool:
        return self._swap_lock.locked()

    def swap_status(self) -> dict:
        return {"in_progress": self.swapping, "path": self.swap_target,
                "phase": self.swap_phase}

    def _phase(self, name: str) -> float:
        self.swap_phase = name
        return time.monotonic()

    # ------------------------------------------------------------------ leases
    def acquire(self) -> Entry | None:
        entry = self.active
        if entry is None or not self.admitting:
            return None
        entry.leases += 1
        entry.drained.clear()
        return entry

    def release(self, entry: Entry) -> None:
        entry.leases -= 1
        if entry.leases <= 0:
            entry.leases = 0
            entry.drained.set()

    # ------------------------------------------------------------------ versions
    def install(self, handle: ModelHandle) -> Entry:
        entry = Entry(handle.version, handle.path, handle.manifest or {}, time.time(), "active",
                      handle)
        entry.drained.set()
        self._activate(entry)
        return entry

    def _activate(self, entry: Entry) -> None:
        old = self.active
        h = entry.handle
        entry.labels = (h.name, h.version, h.checkpoint_hash or "")
        profile = getattr(h, "profile", None)
        if profile is not None:
            entry.think = {"kind": profile.kind, "opens": profile.opens, "tags": profile.tags}
        entry.state = "active"
        self.active = entry  # the atomic switch: new requests lease the new entry from here
        self.history.append(entry)
        metrics.set_model(h.name, h.version, h.checkpoint_hash)
        if old is not None:
            if old.state == "active":
                old.state = "draining"  # "retired" already when replace freed it first
            if old.labels != entry.labels:
                metrics.MODEL_INFO.labels(*old.labels).set(0)

    async def _drain_and_free(self, entry: Entry) -> float:
        t0 = time.monotonic()
        if entry.leases:
            try:
                await asyncio.wait_for(entry.drained.wait(), self.drain_timeout_s)
            except TimeoutError:
                logger.warning("version %s still had %d requests after %.0f s; freeing it",
                               entry.version, entry.leases, self.drain_timeout_s)
        entry.state = "retired"
        handle, entry.handle = entry.handle, None
        if handle is not None:
            if handle.lora_request is not None:
                try:
                    await handle.engine.remove_lora(handle.lora_request.lora_int_id)
                except Exception:  # the engine may be gone; nothing to free then
                    logger.debug("remove_lora failed", exc_info=True)
            # An adapter and its base share one engine: free it only when no live
            # version uses it any more.
            shared = any(e.handle is not None and e.handle.engine is handle.engine
                         for e in self.history)
            if not shared:
                await asyncio.to_thread(handle.engine.shutdown)
        return time.monotonic() - t0

    def previous(self) -> Entry | None:
        """The version that was active before the current one."""
        for entry in reversed(self.history[:-1]):
            if entry.state in ("retired", "draining") and entry.version != self.active.version:
                return entry
        return None

    async def swap(self, path: str, version: str | None, validate: Callable[[str], dict],
                   load: Callable[[str, dict], Awaitable[ModelHandle]],
                   warm: Callable[[ModelHandle], Awaitable[None]],
                   strategy: str = "side_by_side") -> dict:
        """Swap to ``path``; returns the new version and each phase's duration (seconds)."""
        if self._swap_lock.locked():
            raise SwapInProgress("a swap is already running")
        async with self._swap_lock:
            self.swap_target = path
            try:
                return await self._swap(path, version, validate, load, warm, strategy)
            finally:
                self.swap_target = self.swap_phase = None

    async def _swap(self, path: str, version: str | None, validate: Callable[[str], dict],
                    load: Callable[[str, dict], Awaitable[ModelHandle]],
                    warm: Callable[[ModelHandle], Awaitable[None]], strategy: str) -> dict:
        phases: dict[str, float] = {}
        t = self._phase("validate")
        manifest = await asyncio.to_thread(validate, path)
        phases["validate"] = time.monotonic() - t
        old = self.active
        try:
            if strategy == "replace" and old is not None:
                self.admitting = False
                t = self._phase("drain_old")
                phases["drain_old"] = await self._drain_and_free(old)
            t = self._phase("load")
            handle = await load(path, manifest)
            if version:
                handle.version = version
            phases["load"] = time.monotonic() - t
            t = self._phase("warm")
            await warm(handle)
            phases["warm"] = time.monotonic() - t
        except BaseException:
            metrics.SWAPS.labels("failed").inc()
            if strategy == "replace" and old is not None and old.handle is None:
                self._phase("restore_old")
                # The old engine is gone: reload it so the service keeps serving.
                restored = await load(old.path, old.manifest)
                self._activate(Entry(old.version, old.path, old.manifest, time.time(),
                                     "active", restored))
            raise
        finally:
            self.admitting = True
        entry = Entry(handle.version, handle.path, manifest, time.time(), "active", handle)
        entry.drained.set()
        t = self._phase("switch")
        self._activate(entry)
        phases["switch"] = time.monotonic() - t
        if old is not None and strategy != "replace":
            self._phase("drain_old")
            phases["drain_old"] = await self._drain_and_free(old)
        metrics.SWAPS.labels("ok").inc()
        return {"version": entry.version, "previous": old.version if old else None,
                "strategy": strategy,
                "phases_s": {k: round(v, 3) for k, v in phases.items()}}
