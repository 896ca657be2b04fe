"""The service's state between requests (`ServiceState`): one typed object on ``app.state``,
reached in routes as ``State`` (``Annotated[ServiceState, Depends(get_state)]``), and the one
answer to whether the service can take a request now, and why not (routes and /ready).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from lapo.service import metrics
from lapo.service.admission import Admission
from lapo.service.chat import ChatService
from lapo.service.completions import CompletionService
from lapo.service.errors import APIError
from lapo.service.errors import unavailable_error as _503
from lapo.service.model import engine_dead
from lapo.service.registry import ModelRegistry
from lapo.service.settings import Settings
from lapo.service.supervisor import EngineSupervisor

logger = logging.getLogger(__name__)


def _log_exit(code: int) -> None:
    logger.critical("exit requested (code %d)", code)


@dataclass
class ServiceState:
    """What the app holds: its settings, the serving class, the model versions, admission,
    and the engine's supervisor once the engine runs."""

    settings: Settings
    chat: ChatService
    registry: ModelRegistry
    admission: Admission
    completions: CompletionService
    supervisor: EngineSupervisor | None = None
    load_error: str | None = None  # why the start-up model did not load
    shutting_down: bool = False  # set on SIGTERM: admit nothing more, drain
    # Stops the server with an exit code: `lapo.service.main` sets it; in-process: log only.
    request_exit: Callable[[int], None] = field(default=_log_exit)

    @classmethod
    def create(cls, settings: Settings) -> ServiceState:
        metrics.PROMOTED.labels(settings.scheduling)  # the series exists (0) before any fires
        return cls(settings=settings, chat=ChatService(settings),
                   registry=ModelRegistry(settings.drain_timeout_s),
                   admission=Admission(settings.max_concurrency, settings.max_queue,
                                       settings.scheduling, settings.starvation_bound_s,
                                       on_change=metrics.observe_admission),
                   completions=CompletionService(settings))

    def unavailable(self) -> APIError | None:
        """The 503 to answer instead of serving, or None when a request can be admitted."""
        if self.shutting_down:
            return _503("The server is shutting down and admits no new requests; retry "
                        "(another replica will answer).", "shutting_down", 1)
        if self.load_error is not None:
            return _503("The model failed to load; see the server log.", "model_load_failed")
        supervisor = self.supervisor
        entry = self.registry.active
        if supervisor is not None and supervisor.gave_up:
            return _503("The engine died and could not be restarted; the server is exiting.",
                        "engine_unavailable")
        if entry is None or entry.handle is None:
            return _503("The model is still loading; retry shortly.", "model_not_ready")
        if (supervisor is not None and supervisor.restarting) or engine_dead(
                entry.handle.engine):
            return _503("The inference engine stopped; the service is restarting it. Retry "
                        "shortly.", "engine_unavailable")
        if not self.registry.admitting:
            return _503("The service is swapping models and not admitting requests; retry "
                        "shortly.", "model_not_ready")
        return None


def service_state(app: FastAPI) -> ServiceState:
    """The app's `ServiceState` (`create_app` puts it there)."""
    return app.state.service


def get_state(request: Request) -> ServiceState:
    return service_state(request.app)


State = Annotated[ServiceState, Depends(get_state)]
