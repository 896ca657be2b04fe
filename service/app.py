"""The FastAPI app: `create_app(settings)`; the engine starts in the lifespan, in the background.

`/health` answers at once (liveness); `/ready` is 503 until the engine can serve. Routes are
thin: they authenticate, parse, call `ChatService`, and map the result.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from lapo.protocol import TokenCounter
from service import errors, metrics
from service.chat import ChatService, ModelHandle
from service.errors import APIError, error_body
from service.registry import ModelRegistry
from service.schemas import ChatCompletionRequest, ModelCard, ModelList
from service.settings import Settings

logger = logging.getLogger(__name__)


def load_model(settings: Settings, path=None, name: str | None = None) -> ModelHandle:
    """Blocking: tokenizer, manifest and engine for a checkpoint (run off the event loop)."""
    import json
    from pathlib import Path

    from transformers import AutoTokenizer

    from lapo.engine import EngineConfig, start_async_engine

    path = Path(path or settings.model)
    name = name or settings.model_name
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no checkpoint at {path} (config.json missing)")
    manifest = {}
    if (path / "manifest.json").is_file():
        manifest = json.loads((path / "manifest.json").read_text())
    version = manifest.get("version") or manifest.get("checkpoint_hash") or "unversioned"
    logger.info("loading %s (version %s)", path, version)
    tokenizer = AutoTokenizer.from_pretrained(path)
    engine = start_async_engine(EngineConfig(
        model=str(path), max_model_len=settings.max_model_len,
        max_num_seqs=settings.max_num_seqs, enforce_eager=settings.enforce_eager,
        dtype=settings.dtype, served_model_name=name, enable_lora=settings.enable_lora,
        max_lora_rank=settings.max_lora_rank,
        tensor_parallel_size=settings.tensor_parallel_size,
    ))
    return ModelHandle(name=name, version=str(version), manifest=manifest,
                       checkpoint_hash=manifest.get("checkpoint_hash"), path=str(path),
                       engine=engine, tok=TokenCounter(tokenizer),
                       created=int(time.time()),
                       baseline_profile=manifest.get("baseline_profile"),
                       base_path=str(path.resolve()),
                       base_hash=manifest.get("checkpoint_hash") or _hash(path))


def _hash(path) -> str:
    from training.manifest import checkpoint_hash

    return checkpoint_hash(path)


def require_key(request: Request) -> None:
    keys = request.app.state.settings.api_keys
    if not keys:
        return
    auth = request.headers.get("authorization", "")
    given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    ok = False
    for key in keys:  # constant time per key; never logged or echoed
        ok |= hmac.compare_digest(given.encode(), key.get_secret_value().encode())
    if not ok:
        raise APIError(401, "Invalid or missing API key (Authorization: Bearer ...).",
                       "authentication_error", None, "invalid_api_key")


def _not_ready(request: Request) -> APIError:
    state = request.app.state
    if state.load_error is not None:
        message = "The model failed to load; see the server log."
    elif state.registry.active is not None:
        message = "The service is swapping models and not admitting requests; retry shortly."
    else:
        message = "The model is still loading; retry shortly."
    return APIError(503, message, "server_error", None, "model_not_ready",
                    {"Retry-After": "5"})


def active_model(request: Request) -> ModelHandle:
    entry = request.app.state.registry.active
    if entry is None or entry.handle is None:
        raise _not_ready(request)
    return entry.handle


Auth = Annotated[None, Depends(require_key)]
Model = Annotated[ModelHandle, Depends(active_model)]


def create_app(settings: Settings | None = None, start_engine: bool = True) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.load_error = None

        async def load() -> None:
            try:
                model = await asyncio.to_thread(load_model, settings)
                if settings.shadow_model and settings.shadow_fraction > 0:
                    from service.shadow import ShadowRunner

                    base = await asyncio.to_thread(load_model, settings,
                                                   settings.shadow_model, "shadow-baseline")
                    app.state.chat.shadow = ShadowRunner(base, settings.shadow_fraction,
                                                         settings.shadow_concurrency)
                    logger.info("shadow baseline: %s on %.0f%% of requests",
                                settings.shadow_model, 100 * settings.shadow_fraction)
                app.state.registry.install(model)
                logger.info("ready: serving %s as '%s'", settings.model, settings.model_name)
            except Exception as exc:
                app.state.load_error = f"{type(exc).__name__}: {exc}"
                logger.exception("engine failed to start")

        task = asyncio.create_task(load()) if start_engine else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
            if app.state.chat.shadow is not None:
                await app.state.chat.shadow.close()
            engines = {id(e.handle.engine): e.handle.engine
                       for e in app.state.registry.history if e.handle is not None}
            for engine in engines.values():  # adapters share their base's engine
                logger.info("shutting down an engine")
                engine.shutdown()

    app = FastAPI(title="lapo-stack", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible chat completions for length-adaptive "
                  "reasoning models (LAPO), on vLLM.")
    app.state.settings = settings
    app.state.chat = ChatService(settings)
    app.state.registry = ModelRegistry(settings.drain_timeout_s)
    app.state.load_error = None
    errors.install(app)
    if settings.admin_key is not None:
        from service.admin import router as admin_router

        app.include_router(admin_router)

    @app.get("/health", tags=["ops"])
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready", tags=["ops"])
    async def ready(request: Request):
        entry = request.app.state.registry.active
        model = entry.handle if entry is not None else None
        if model is None or not request.app.state.registry.admitting:
            failed = request.app.state.load_error is not None
            message = "model failed to load; see the server log" if failed else "loading"
            return JSONResponse(error_body(503, message, "server_error", None,
                                           "model_load_failed" if failed else
                                           "model_not_ready"), status_code=503,
                                headers={"Retry-After": "5"})
        return {"status": "ready", "model": model.name, "version": model.version}

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def metrics_endpoint() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

        # vLLM's engine metrics (vllm:*) live in the default registry beside ours.
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", response_model=ModelList, tags=["openai"])
    async def models(_: Auth, model: Model) -> ModelList:
        return ModelList(data=[ModelCard(id=model.name, created=model.created,
                                         version=model.version,
                                         checkpoint_hash=model.checkpoint_hash,
                                         root=model.name)])

    @app.post("/v1/chat/completions", tags=["openai"])
    async def chat_completions(body: ChatCompletionRequest, request: Request, _: Auth):
        chat: ChatService = request.app.state.chat
        registry: ModelRegistry = request.app.state.registry
        # A lease on the active version: a swap lets this request finish on it.
        entry = registry.acquire()
        if entry is None or entry.handle is None:
            if entry is not None:
                registry.release(entry)
            raise _not_ready(request)
        model = entry.handle
        labels = (model.name, model.version)
        handed_over = False
        try:
            if body.stream:
                stream = await _counted(chat.stream(body, model), labels, "true")
                handed_over = True  # the stream returns the lease when it ends
                return StreamingResponse(
                    _track_stream(stream, labels, lambda: registry.release(entry)),
                    media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
            response, headers, _ = await _counted(
                _until_disconnect(request, chat.complete(body, model)), labels, "false")
            return JSONResponse(response.model_dump(), headers=headers)
        finally:
            if not handed_over:
                registry.release(entry)

    return app


async def _counted(coro, labels: tuple[str, str], stream: str):
    """Await ``coro`` counting the request's outcome; in-flight while it runs."""
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
    finally:
        metrics.IN_FLIGHT.labels(*labels).dec()
        if stream == "false" or status != "ok":
            metrics.REQUESTS.labels(*labels, stream, status).inc()
            metrics.LATENCY.labels(*labels, stream).observe(time.monotonic() - started)


async def _track_stream(stream, labels: tuple[str, str], release):
    """The SSE body, counted as in flight until it ends or the client goes away."""
    metrics.IN_FLIGHT.labels(*labels).inc()
    started = time.monotonic()
    status = "cancelled"
    try:
        async for chunk in stream:
            yield chunk
        status = "ok"
    finally:
        release()
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
