"""Whether the service can take a request now, and why not (one answer for routes and /ready)."""

from __future__ import annotations

from lapo.service.errors import APIError
from lapo.service.errors import unavailable_error as _503
from lapo.service.model import engine_dead


def unavailable(state) -> APIError | None:
    """The 503 to answer instead of serving, or None when a request can be admitted."""
    if state.shutting_down:
        return _503("The server is shutting down and admits no new requests; retry (another "
                    "replica will answer).", "shutting_down", 1)
    if state.load_error is not None:
        return _503("The model failed to load; see the server log.", "model_load_failed")
    supervisor = state.supervisor
    entry = state.registry.active
    if supervisor is not None and supervisor.gave_up:
        return _503("The engine died and could not be restarted; the server is exiting.",
                    "engine_unavailable")
    if entry is None or entry.handle is None:
        return _503("The model is still loading; retry shortly.", "model_not_ready")
    if (supervisor is not None and supervisor.restarting) or engine_dead(entry.handle.engine):
        return _503("The inference engine stopped; the service is restarting it. Retry "
                    "shortly.", "engine_unavailable")
    if not state.registry.admitting:
        return _503("The service is swapping models and not admitting requests; retry "
                    "shortly.", "model_not_ready")
    return None
