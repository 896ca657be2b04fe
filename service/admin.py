"""Admin API (on only when ``LAPO_ADMIN_KEY`` is set): list versions, hot-swap, roll back.

    GET  /admin/models                      active version, the running swap (if any), history
    POST /admin/models/swap      {"path", "version"?, "strategy"?}
    POST /admin/models/rollback             back to the previous version

The admin key is separate from the API keys; missing -> 401, wrong -> 403 (OpenAI error
shape). The key is compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from lapo.adapters import AdapterError
from lapo.service.checkpoints import CheckpointError, validate_checkpoint
from lapo.service.errors import APIError
from lapo.service.model import ModelHandle
from lapo.service.registry import SwapInProgress
from lapo.service.state import ServiceState, State

logger = logging.getLogger(__name__)


def require_admin(request: Request, state: State) -> None:
    key = state.settings.admin_key
    auth = request.headers.get("authorization", "")
    if not auth.lower().startswith("bearer "):
        raise APIError(401, "Admin routes need 'Authorization: Bearer <admin key>'.",
                       type="authentication_error", code="missing_admin_key")
    given = auth[7:].strip().encode()
    if not hmac.compare_digest(given, key.get_secret_value().encode()):
        raise APIError(403, "Invalid admin key.", type="permission_error",
                       code="invalid_admin_key")


Admin = Annotated[None, Depends(require_admin)]
router = APIRouter(prefix="/admin", tags=["admin"])


class SwapRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1, description="checkpoint folder inside LAPO_MODEL_ROOT")
    version: str | None = Field(None, max_length=128)
    strategy: Literal["side_by_side", "replace"] | None = Field(
        None, description="this swap's strategy; default LAPO_SWAP_STRATEGY")


async def _warm(handle: ModelHandle) -> None:
    """A short probe generation: the new engine must answer before it takes traffic."""
    from lapo.service.generation import ChoiceJob, Prompt, SamplingSpec, generate_choice

    prompt = Prompt.chat([{"role": "user", "content": "warm-up"}], handle.tok)
    result = await generate_choice(handle, ChoiceJob(prompt, SamplingSpec(0.0, 1.0, 8, 0, None)))
    if result.counts.completion_tokens < 1:
        raise RuntimeError("the probe generation produced nothing")


async def _do_swap(state: ServiceState, path: str, version: str | None,
                   strategy: str | None = None) -> dict:
    from lapo.service.loader import open_version

    registry, settings = state.registry, state.settings
    root = Path(settings.model_root or Path(settings.model).parent)
    active = registry.active.handle if registry.active else None
    # The engine's own weights: what an adapter must have been trained on.
    base_hash = active.base_hash if active is not None else None
    # An adapter's own tokenizer must have the engine's vocabulary.
    base_tokenizer = active.engine_tok.tokenizer if active is not None else None

    def validate(p: str) -> dict:
        return validate_checkpoint(p, root, base_hash, base_tokenizer)

    async def load(p: str, manifest: dict) -> ModelHandle:
        # The engine running now, not the one before the swap began: the replace strategy
        # shuts that one down first (no handle: the target gets an engine of its own).
        running = registry.active.handle if registry.active else None
        return await open_version(settings, p, manifest, running)

    try:
        result = await registry.swap(path, version, validate, load, _warm,
                                     strategy or settings.swap_strategy)
    except SwapInProgress as exc:
        raise APIError(409, "A swap is already running; retry when it finishes.",
                       type="conflict_error", code="swap_in_progress") from exc
    except (CheckpointError, AdapterError) as exc:
        raise APIError(400, f"Checkpoint refused: {exc}", param="path",
                       code="invalid_checkpoint") from exc
    except Exception as exc:
        logger.exception("swap to %s failed", path)
        raise APIError(500, f"Swap failed while loading or warming the checkpoint "
                       f"({type(exc).__name__}); the previous version keeps serving.",
                       type="server_error", code="swap_failed") from exc
    logger.info("swapped to %s (%s)", result["version"], path)
    return result


@router.get("/models")
async def list_models(_: Admin, state: State) -> dict:
    registry = state.registry
    return {"active": registry.active.version if registry.active else None,
            "strategy": state.settings.swap_strategy,
            "swap": registry.swap_status(),
            "history": [e.summary() for e in registry.history]}


@router.post("/models/swap")
async def swap(body: SwapRequest, _: Admin, state: State) -> dict:
    return await _do_swap(state, body.path, body.version, body.strategy)


@router.post("/models/rollback")
async def rollback(_: Admin, state: State) -> dict:
    registry = state.registry
    previous = registry.previous() if registry.active else None
    if previous is None:
        raise APIError(409, "There is no previous version to roll back to.",
                       type="conflict_error", code="no_previous_version")
    return await _do_swap(state, previous.path, previous.version)
