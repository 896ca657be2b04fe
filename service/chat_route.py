"""``POST /v1/chat/completions``: admission, lease, deadline, then `ChatService`.

Order for each request: refuse at once when the service cannot serve (503); take an admission
slot, waiting in the bounded queue (429 when it is full); lease the active model version (a
hot-swap lets the request finish on it); run under the per-request deadline (504, or an error
event on a stream, and the engine request is aborted). Slot and lease are returned exactly
once, when the response or the stream ends, whatever ends it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, StreamingResponse

from service import metrics
from service.admission import Saturated
from service.auth import require_key
from service.errors import APIError, documented, sse_error
from service.schemas import ChatCompletion, ChatCompletionRequest
from service.state import unavailable
from service.supervisor import engine_dead

logger = logging.getLogger(__name__)
router = APIRouter()
Auth = Annotated[None, Depends(require_key)]


class Admitted:
    """One request's admission slot and model lease; `close` returns both, once."""

    def __init__(self, state) -> None:
        self.state = state
        self.entry = None
        self.slot = False
        self.closed = False

    async def enter(self):
        state = self.state
        try:
            await state.admission.acquire()
        except Saturated:
            metrics.REJECTED.labels("queue_full").inc()
            raise APIError(429, f"The server is at capacity ({state.admission.max_concurrency} "
                           f"running, {state.admission.max_queue} queued: "
                           "LAPO_MAX_CONCURRENCY / LAPO_MAX_QUEUE); retry after "
                           f"{state.settings.retry_after_s} s.", "rate_limit_error", None,
                           "server_overloaded",
                           {"Retry-After": str(state.settings.retry_after_s)}) from None
        self.slot = True
        _gauges(state.admission)
        refusal = unavailable(state)  # it may have changed while we queued
        if refusal is not None:
            metrics.REJECTED.labels("not_ready").inc()
            raise refusal
        # Nothing awaited since the check: an active, admitting version with a handle.
        self.entry = state.registry.acquire()
        return self.entry.handle

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.entry is not None:
            self.state.registry.release(self.entry)
        if self.slot:
            self.state.admission.release()
            _gauges(self.state.admission)


def _gauges(admission) -> None:
    metrics.ADMITTED.set(admission.active)
    metrics.QUEUED.set(admission.queued)


def _timeout_error(settings) -> APIError:
    return APIError(504, f"The request did not finish within {settings.request_timeout_s:g} s "
                    "(LAPO_REQUEST_TIMEOUT_S, queueing included); its generation was stopped.",
                    "timeout_error", None, "request_timeout")


def _engine_error(model) -> APIError | None:
    if engine_dead(model.engine):
        return APIError(503, "The engine stopped while generating; the service is restarting "
                        "it. Retry the request.", "server_error", None, "engine_unavailable",
                        {"Retry-After": "5"})
    return None


@asynccontextmanager
async def _deadline(deadline: float | None, settings, stream: str):
    try:
        async with asyncio.timeout_at(deadline):
            yield
    except TimeoutError:
        metrics.TIMEOUTS.labels(stream).inc()
        raise _timeout_error(settings) from None


@router.post("/v1/chat/completions", tags=["openai"], response_model=ChatCompletion,
             responses=documented(400, 401, 404, 413, 429, 503, 504))
async def chat_completions(body: ChatCompletionRequest, request: Request, _: Auth):
    """OpenAI chat completions; with ``stream``, server-sent events."""
    state = request.app.state
    settings = state.settings
    refusal = unavailable(state)
    if refusal is not None:
        metrics.REJECTED.labels("not_ready").inc()
        raise refusal
    if settings.log_prompts:  # off by default: logs never carry prompts otherwise
        logger.info("prompt id=%s %s", request.scope.get("state", {}).get("request_id"),
                    json.dumps([m.model_dump() for m in body.messages])[:4000])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + settings.request_timeout_s if settings.request_timeout_s else None
    admitted = Admitted(state)
    handed_over = False
    try:
        if body.stream:
            async with _deadline(deadline, settings, "true"):
                model = await admitted.enter()
                stream = await _counted(state.chat.stream(body, model), model, "true")
            handed_over = True  # the stream returns slot and lease when it ends
            return StreamingResponse(
                _track_stream(stream, model, admitted.close, deadline, settings),
                media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

        async def work():
            model = await admitted.enter()
            try:
                return await _counted(state.chat.complete(body, model), model, "false")
            except APIError:
                raise
            except Exception as exc:
                raise (_engine_error(model) or exc) from None

        async with _deadline(deadline, settings, "false"):
            response, headers, _ = await _until_disconnect(request, work())
        return JSONResponse(response.model_dump(), headers=headers)
    finally:
        if not handed_over:
            admitted.close()


async def _counted(coro, model, stream: str):
    """Await ``coro`` counting the request's outcome; in flight while it runs."""
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
        if stream == "false" or status != "ok":
            metrics.REQUESTS.labels(*labels, stream, status).inc()
            metrics.LATENCY.labels(*labels, stream).observe(time.monotonic() - started)


async def _track_stream(stream, model, close, deadline: float | None, settings):
    """The SSE body: counted in flight until it ends, the client goes away or time runs out."""
    labels = (model.name, model.version)
    metrics.IN_FLIGHT.labels(*labels).inc()
    started = time.monotonic()
    status = "cancelled"
    try:
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    chunk = await anext(stream)
            except StopAsyncIteration:
                status = "ok"
                break
            except TimeoutError:
                status = "timeout"
                metrics.TIMEOUTS.labels("true").inc()
                error = _timeout_error(settings)
                yield sse_error(error.message, error.type, error.code)
                break
            yield chunk
    finally:
        try:
            await stream.aclose()  # its engine requests are aborted if still running
        finally:
            close()
            metrics.IN_FLIGHT.labels(*labels).dec()
            metrics.REQUESTS.labels(*labels, "true", status).inc()
            metrics.LATENCY.labels(*labels, "true").observe(time.monotonic() - started)


async def _until_disconnect(request: Request, coro):
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
        raise APIError(499, "Client closed the request.", "invalid_request_error")
    finally:
        watcher.cancel()
        if not work.done():
            work.cancel()
            await asyncio.gather(work, return_exceptions=True)
