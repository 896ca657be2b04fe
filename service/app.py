"""The FastAPI app: `create_app(settings)`; the engine starts in the lifespan, in the background.

`/health` answers at once (liveness); `/ready` is 200 only while a request would be admitted:
503 while loading, swapping (replace strategy), restarting a dead engine, shutting down, or
while the admission queue is full (``code: saturated``), so a load balancer routes elsewhere.
Routes are thin: they authenticate, parse, call `ChatService`, and map the result.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from lapo.service import errors, metrics, middleware
from lapo.service.admission import Admission
from lapo.service.chat import ChatService
from lapo.service.chat_route import Auth
from lapo.service.chat_route import router as chat_router
from lapo.service.errors import error_body
from lapo.service.model import ModelHandle
from lapo.service.registry import ModelRegistry
from lapo.service.schemas import ModelCard, ModelList
from lapo.service.settings import Settings
from lapo.service.state import unavailable
from lapo.service.supervisor import EngineSupervisor
from lapo.service.tokenize_route import router as tokenize_router

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, start_engine: bool = True) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        from lapo.service.loader import open_model, reload_engine

        app.state.load_error = None
        tasks: list[asyncio.Task] = []

        async def load() -> None:
            try:
                model = await open_model(settings)
                if settings.shadow_model and settings.shadow_fraction > 0:
                    from lapo.service.shadow import ShadowRunner

                    base = await open_model(settings, settings.shadow_model,
                                            "shadow-baseline")
                    app.state.chat.shadow = ShadowRunner(base, settings.shadow_fraction,
                                                         settings.shadow_concurrency)
                    logger.info("shadow baseline: %s on %.0f%% of requests",
                                settings.shadow_model, 100 * settings.shadow_fraction)
                app.state.registry.install(model)
                metrics.ENGINE_UP.set(1)
                logger.info("ready: serving %s as '%s'", settings.model, settings.model_name)
            except Exception as exc:
                app.state.load_error = f"{type(exc).__name__}: {exc}"
                logger.exception("engine failed to start")
                return
            supervisor = EngineSupervisor(
                app.state.registry, lambda dead: reload_engine(settings, dead),
                settings.engine_max_restarts, settings.engine_restart_backoff_s,
                lambda: app.state.request_exit(3))
            app.state.supervisor = supervisor
            tasks.append(asyncio.create_task(supervisor.run()))

        if start_engine:
            tasks.append(asyncio.create_task(load()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            if app.state.chat.shadow is not None:
                await app.state.chat.shadow.close()
            engines = {id(e.handle.engine): e.handle.engine
                       for e in app.state.registry.history if e.handle is not None}
            for engine in engines.values():  # adapters share their base's engine
                logger.info("shutting down an engine")
                try:
                    engine.shutdown()
                except Exception:  # a dead engine: nothing left to free
                    logger.debug("engine shutdown raised", exc_info=True)

    app = FastAPI(title="lapo-stack", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible chat completions for length-adaptive "
                  "reasoning models (LAPO), on vLLM.")
    state = app.state
    state.settings = settings
    state.chat = ChatService(settings)
    state.registry = ModelRegistry(settings.drain_timeout_s)
    state.admission = Admission(settings.max_concurrency, settings.max_queue)
    state.supervisor = None
    state.load_error = None
    state.shutting_down = False
    # Set by `lapo.service.main` to stop the server with an exit code; in-process: log only.
    state.request_exit = lambda code: logger.critical("exit requested (code %d)", code)
    errors.install(app)
    errors.drop_422(app)
    middleware.install(app, settings)
    app.include_router(chat_router)
    app.include_router(tokenize_router)
    if settings.admin_key is not None:
        from lapo.service.admin import router as admin_router

        app.include_router(admin_router)

    @app.get("/health", tags=["ops"])
    async def health() -> dict:
        """Liveness: the process answers (restart it when this fails)."""
        return {"status": "ok"}

    @app.get("/ready", tags=["ops"], responses=errors.documented(503))
    async def ready(request: Request):
        """Readiness: 200 only while a new request would be admitted."""
        state = request.app.state
        admission: Admission = state.admission
        load = {"in_flight": admission.active, "queued": admission.queued,
                "max_concurrency": admission.max_concurrency, "max_queue": admission.max_queue}
        refusal = unavailable(state)
        if refusal is None and admission.saturated:
            refusal = errors.unavailable_error("saturated: every slot is busy and the queue "
                                               "is full", "saturated",
                                               state.settings.retry_after_s)
        if refusal is not None:
            body = error_body(503, refusal.message, refusal.type, None, refusal.code)
            return JSONResponse({**body, **load}, status_code=503, headers=refusal.headers)
        model = state.registry.active.handle
        return {"status": "ready", "model": model.name, "version": model.version, **load}

    @app.get("/metrics", tags=["ops"], include_in_schema=False)
    async def metrics_endpoint() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

        # vLLM's engine metrics (vllm:*) live in the default registry beside ours.
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models", response_model=ModelList, tags=["openai"],
             responses=errors.documented(401, 503))
    async def models(_: Auth, request: Request) -> ModelList:
        entry = request.app.state.registry.active
        if entry is None or entry.handle is None:
            raise unavailable(request.app.state)  # "still loading" (or why not)
        model: ModelHandle = entry.handle
        return ModelList(data=[ModelCard(id=model.name, created=model.created,
                                         version=model.version,
                                         checkpoint_hash=model.checkpoint_hash,
                                         root=model.name)])

    return app
