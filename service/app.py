"""The FastAPI app: `create_app(settings)`; the engine starts in the lifespan, in the background.

`/health` answers at once (liveness); `/ready` is 200 only while a request would be admitted:
503 while loading, swapping (replace strategy), restarting a dead engine, shutting down, or
while the admission queue is full (``code: saturated``), so a load balancer routes elsewhere.
Routes are thin: they authenticate, parse, call `ChatService` (or `CompletionService`), and map
the result; each router is its own module (`chat_route`, `completions_route`, `tokenize_route`,
`models_route`, `ops_route`, `admin`). The app's state is one `ServiceState`
(`lapo.service.state`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from lapo.service import errors, metrics, middleware
from lapo.service.chat_route import router as chat_router
from lapo.service.completions_route import router as completions_router
from lapo.service.models_route import router as models_router
from lapo.service.ops_route import router as ops_router
from lapo.service.responses_route import router as responses_router
from lapo.service.settings import Settings
from lapo.service.state import ServiceState, service_state
from lapo.service.supervisor import EngineSupervisor
from lapo.service.tokenize_route import router as tokenize_router

logger = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, start_engine: bool = True) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = service_state(app)
        state.load_error = None
        tasks: list[asyncio.Task] = []
        if start_engine:
            tasks.append(asyncio.create_task(_start(state, tasks)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await _stop(state)

    app = FastAPI(title="lapo-stack", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible chat completions for length-adaptive "
                  "reasoning models (LAPO), on vLLM.")
    app.state.service = ServiceState.create(settings)
    errors.install(app)
    errors.drop_422(app)
    middleware.install(app, settings)
    app.include_router(chat_router)
    app.include_router(completions_router)
    app.include_router(responses_router)
    app.include_router(tokenize_router)
    if settings.admin_key is not None:
        from lapo.service.admin import router as admin_router

        app.include_router(admin_router)
    app.include_router(ops_router)
    app.include_router(models_router)
    return app


async def _start(state: ServiceState, tasks: list[asyncio.Task]) -> None:
    """Load the model (and the shadow baseline), install it, then supervise its engine."""
    from lapo.service.loader import open_model, reload_engine

    settings = state.settings
    try:
        model = await open_model(settings)
        if settings.shadow_model and settings.shadow_fraction > 0:
            from lapo.service.shadow import ShadowRunner

            base = await open_model(settings, settings.shadow_model, "shadow-baseline")
            state.chat.shadow = ShadowRunner(base, settings.shadow_fraction,
                                             settings.shadow_concurrency)
            logger.info("shadow baseline: %s on %.0f%% of requests",
                        settings.shadow_model, 100 * settings.shadow_fraction)
        state.registry.install(model)
        metrics.ENGINE_UP.set(1)
        logger.info("ready: serving %s as '%s'", settings.model, settings.model_name)
    except Exception as exc:
        state.load_error = f"{type(exc).__name__}: {exc}"
        logger.exception("engine failed to start")
        return
    supervisor = EngineSupervisor(
        state.registry, lambda dead: reload_engine(settings, dead),
        settings.engine_max_restarts, settings.engine_restart_backoff_s,
        lambda: state.request_exit(3))
    state.supervisor = supervisor
    tasks.append(asyncio.create_task(supervisor.run()))


async def _stop(state: ServiceState) -> None:
    """Free the shadow baseline and every engine a version still holds."""
    if state.chat.shadow is not None:
        await state.chat.shadow.close()
    engines = {id(e.handle.engine): e.handle.engine
               for e in state.registry.history if e.handle is not None}
    for engine in engines.values():  # adapters share their base's engine
        logger.info("shutting down an engine")
        try:
            engine.shutdown()
        except Exception:  # a dead engine: nothing left to free
            logger.debug("engine shutdown raised", exc_info=True)
