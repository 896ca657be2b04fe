"""``GET /v1/models``: the model this server serves (OpenAI's model list, one card)."""

from __future__ import annotations

from fastapi import APIRouter

from lapo.service import errors
from lapo.service.auth import Auth
from lapo.service.schemas import ModelCard, ModelList
from lapo.service.state import State

router = APIRouter()


@router.get("/v1/models", response_model=ModelList, tags=["openai"],
            responses=errors.documented(401, 503))
async def models(_: Auth, state: State) -> ModelList:
    entry = state.registry.active
    if entry is None or entry.handle is None:
        raise state.unavailable()  # "still loading" (or why not)
    model = entry.handle
    return ModelList(data=[ModelCard(id=model.name, created=model.created,
                                     version=model.version,
                                     checkpoint_hash=model.checkpoint_hash,
                                     root=model.name)])
