"""One request's hold on the service: its admission slot, its model lease and its deadline.

`RequestScope` owns all three and returns slot and lease exactly once, on every path (a
response, an error, a timeout, a client that goes away, a stream that ends or is dropped).
Order for each request: refuse at once when the service cannot serve (503); take an admission
slot, waiting in the bounded queue (429 when it is full); lease the active model version (a
hot-swap lets the request finish on it); run under the per-request deadline, queueing
included (504, or an error event on a stream; the engine request is aborted). It also counts
the request's outcome (`lapo_requests_total`, latency, in flight).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from lapo.service import metrics
from lapo.service.admission import Admitted, Saturated
from lapo.service.errors import APIError, sse_error, unavailable_error
from lapo.service.model import ModelHandle
from lapo.service.registry import Entry
from lapo.service.scheduling import Scheduled
from lapo.service.state import ServiceState

T = TypeVar("T")


class RequestScope:
    def __init__(self, state: ServiceState, stream: bool) -> None:
        self.state = state
        self.settings = state.settings
        self.stream = "true" if stream else "false"  # the metrics' label
        timeout = self.settings.request_timeout_s
        self.deadline = asyncio.get_running_loop().time() + timeout if timeout else None
        self._entry: Entry | None = None
        self._slot = False
        self._released = False
        # Scheduling: the request's expected work in tokens (None: unknown) and how it got
        # its slot (`Admitted`: seconds waited, promoted by the starvation bound).
        self.key: float | None = None
        self.admitted = Admitted()
        # The declared scheduler's probe (`lapo.service.schedule`), run only while waiting,
        # and what it left for the request's work.
        self.keyer: Callable[[], Awaitable[float | None]] | None = None
        self.probe = Scheduled()
        self.created = time.monotonic()

    @classmethod
    def open(cls, state: ServiceState, stream: bool) -> RequestScope:
        """A scope for a new request, or the 503 to answer when the service cannot serve."""
        _refuse_if_unavailable(state)
        return cls(state, stream)

    # ------------------------------------------------------------------ slot and lease
    def scheduled(self) -> Scheduled:
        """What the scheduler leaves for the request's work: how long it waited, and the
        probe's statement (once it holds its slot)."""
        return dataclasses.replace(self.probe, waited_s=self.admitted.waited_s)

    async def _admit(self) -> ModelHandle:
        state = self.state
        try:
            self.admitted = await state.admission.acquire(self.key, self.keyer)
        except Saturated:
            metrics.REJECTED.labels("queue_full").inc()
            a = state.admission
            raise APIError(429, f"The server is at capacity ({a.max_concurrency} running, "
                           f"{a.max_queue} queued: LAPO_MAX_CONCURRENCY / LAPO_MAX_QUEUE); "
                           f"retry after {self.settings.retry_after_s} s.",
                           type="rate_limit_error", code="server_overloaded",
                           headers={"Retry-After": str(self.settings.retry_after_s)}) from None
        self._slot = True
        policy, bucket = state.admission.policy, metrics.expected_bucket(self.key)
        metrics.QUEUE_WAIT.labels(policy, bucket).observe(self.admitted.waited_s)
        if self.admitted.promoted:
            metrics.PROMOTED.labels(policy).inc()
        _refuse_if_unavailable(state)  # it may have changed while we queued
        # Nothing awaited since the check: an active, admitting version with a handle.
        self._entry = state.registry.acquire()
        return self._entry.handle

    def release(self) -> None:
        """Return the lease and the slot; a second call does nothing."""
        if self._released:
            return
        self._released = True
        if self._entry is not None:
            self.state.registry.release(self._entry)
        if self._slot:
            self.state.admission.release()

    # ------------------------------------------------------------------ the two shapes
    async def complete(self, request: Request,
                       work: Callable[[ModelHandle], Awaitable[T]]) -> T:
        """Admit, then ``work(model)`` under the deadline; cancelled (its engine requests
        aborted) if the client disconnects. Slot and lease are back when this returns."""

        async def admitted() -> T:
            model = await self._admit()
            try:
                return await self._counted(work(model), model)
            except APIError:
                raise
            except Exception:
                if model.dead:
                    raise _engine_stopped() from None
                raise

        try:
            async with self._within_deadline():
                return await until_disconnect(request, admitted())
        finally:
            self.release()

    async def open_stream(self, request: Request,
                          start: Callable[[ModelHandle], Awaitable[AsyncIterator[str]]],
                          **response_kw: Any) -> StreamingResponse:
        """Admit and ``start(model)`` (whose validation errors are HTTP errors) under the
        deadline, cancelled if the client goes away while queued; the response's SSE body
        holds slot and lease until it ends, and the response returns them even if its body
        never starts (the client vanished before the first byte)."""

        async def admitted() -> tuple[ModelHandle, AsyncIterator[str]]:
            model = await self._admit()
            return model, await self._counted(start(model), model)

        try:
            async with self._within_deadline():
                model, body = await until_disconnect(request, admitted())
        except BaseException:
            self.release()
            raise
        return _ScopedStreamingResponse(self._sse(body, model), self, **response_kw)

    # ------------------------------------------------------------------ internals
    @asynccontextmanager
    async def _within_deadline(self) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout_at(self.deadline):
                yield
        except TimeoutError:
            metrics.TIMEOUTS.labels(self.stream).inc()
            raise self._timeout_error() from None

    def _timeout_error(self) -> APIError:
        return APIError(504, f"The request did not finish within "
                        f"{self.settings.request_timeout_s:g} s (LAPO_REQUEST_TIMEOUT_S, "
                        "queueing included); its generation was stopped.",
                        type="timeout_error", code="request_timeout")

    async def _counted(self, coro: Awaitable[T], model: ModelHandle) -> T:
        """Await ``coro`` in flight; count its outcome (a stream's is counted when it ends)."""
        labels = (model.name, model.version)
        metrics.IN_FLIGHT.labels(*labels).inc()
        started = time.monotonic()
        status = "error"
        try:
            result = await coro
            status = "ok"
            return result
        except APIError as exc:
            status = "client_error" if exc.status < 500 else "error"
            raise
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        finally:
            metrics.IN_FLIGHT.labels(*labels).dec()
            if self.stream == "false" or status != "ok":
                metrics.REQUESTS.labels(*labels, self.stream, status).inc()
                metrics.LATENCY.labels(*labels, self.stream).observe(time.monotonic() - started)
                self._observe_scheduled()

    async def _sse(self, body: AsyncIterator[str], model: ModelHandle) -> AsyncIterator[str]:
        """The SSE body: in flight until it ends, the client goes away or time runs out."""
        labels = (model.name, model.version)
        metrics.IN_FLIGHT.labels(*labels).inc()
        started = time.monotonic()
        status = "cancelled"
        try:
            while True:
                try:
                    async with asyncio.timeout_at(self.deadline):
                        chunk = await anext(body)
                except StopAsyncIteration:
                    status = "ok"
                    break
                except TimeoutError:
                    status = "timeout"
                    metrics.TIMEOUTS.labels("true").inc()
                    error = self._timeout_error()
                    yield sse_error(error.message, error.type, error.code)
                    break
                yield chunk
        finally:
            try:
                await body.aclose()  # its engine requests are aborted if still running
            finally:
                self.release()
                metrics.IN_FLIGHT.labels(*labels).dec()
                metrics.REQUESTS.labels(*labels, "true", status).inc()
                metrics.LATENCY.labels(*labels, "true").observe(time.monotonic() - started)
                self._observe_scheduled()

    def _observe_scheduled(self) -> None:
        """End-to-end latency, admission wait included, by policy and expected length."""
        bucket = metrics.expected_bucket(self.key)
        metrics.SCHED_LATENCY.labels(self.state.admission.policy, bucket).observe(
            time.monotonic() - self.created)


class _ScopedStreamingResponse(StreamingResponse):
    """A stream whose generator may never be started (Starlette cancels the response when
    the client disconnects first): an unstarted generator's ``finally`` never runs, so the
    scope is released here too (a second release does nothing)."""

    def __init__(self, content: AsyncIterator[str], request_scope: RequestScope,
                 **kw: Any) -> None:
        super().__init__(content, **kw)
        self._request_scope = request_scope

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                await self.body_iterator.aclose()
            finally:
                self._request_scope.release()


def _refuse_if_unavailable(state: ServiceState) -> None:
    refusal = state.unavailable()
    if refusal is not None:
        metrics.REJECTED.labels("not_ready").inc()
        raise refusal


def _engine_stopped() -> APIError:
    return unavailable_error("The engine stopped while generating; the service is restarting "
                             "it. Retry the request.", "engine_unavailable")


async def until_disconnect(request: Request, coro: Awaitable[T]) -> T:
    """Run ``coro``; if the client disconnects first, cancel it (its engine work is aborted)."""
    work = asyncio.ensure_future(coro)

    async def disconnected() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({work, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            return work.result()
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        raise APIError(499, "Client closed the request.")
    finally:
        watcher.cancel()
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
