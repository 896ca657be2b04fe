"""Operations routes: ``GET /health`` (liveness), ``GET /ready`` (readiness, with the admission
load), ``GET /metrics`` (Prometheus: ours and vLLM's engine metrics)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from lapo.service import errors
from lapo.service.state import State

router = APIRouter(tags=["ops"])


@router.get("/health")
async def health() -> dict:
    """Liveness: the process answers (restart it when this fails)."""
    return {"status": "ok"}


@router.get("/ready", responses=errors.documented(503))
async def ready(state: State):
    """Readiness: 200 only while a new request would be admitted."""
    admission = state.admission
    load = {"in_flight": admission.active, "queued": admission.queued,
            "max_concurrency": admission.max_concurrency, "max_queue": admission.max_queue}
    refusal = state.unavailable()
    if refusal is None and admission.saturated:
        refusal = errors.unavailable_error("saturated: every slot is busy and the queue is "
                                           "full", "saturated", state.settings.retry_after_s)
    if refusal is not None:
        body = errors.error_body(503, refusal.message, refusal.type, None, refusal.code)
        return JSONResponse({**body, **load}, status_code=503, headers=refusal.headers)
    model = state.registry.active.handle
    return {"status": "ready", "model": model.name, "version": model.version, **load}


@router.get("/metrics", include_in_schema=False)
async def metrics_endpoint() -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    # vLLM's engine metrics (vllm:*) live in the default registry beside ours.
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
