"""vLLM's utility routes: ``POST /tokenize``, ``POST /detokenize``, ``GET /version``.

Shapes as vLLM 0.32's OpenAI server has them, so vLLM's own tools (``vllm bench serve``
first calls /tokenize) run against this server. Unlike vLLM, which leaves them open, they take
the same API key as the chat route; the tokenizer routes answer 503 while no model serves.
The work is `lapo.service.tokenization`'s.
"""

from __future__ import annotations

from fastapi import APIRouter

from lapo.service import tokenization
from lapo.service.auth import Auth
from lapo.service.errors import documented
from lapo.service.model import ModelHandle
from lapo.service.schemas import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeRequest,
    TokenizeResponse,
    VersionInfo,
)
from lapo.service.state import ServiceState, State

router = APIRouter()


def _serving(state: ServiceState) -> ModelHandle:
    """The active model, or the 503 a chat request would get now."""
    refusal = state.unavailable()
    if refusal is not None:
        raise refusal
    return state.registry.active.handle


@router.post("/tokenize", tags=["vllm"], response_model=TokenizeResponse,
             responses=documented(400, 401, 404, 413, 503))
async def tokenize(body: TokenizeRequest, _: Auth, state: State) -> TokenizeResponse:
    """Token ids of a ``prompt``, or of chat ``messages`` as the chat route templates them."""
    return tokenization.tokenize(body, _serving(state), state.chat)


@router.post("/detokenize", tags=["vllm"], response_model=DetokenizeResponse,
             responses=documented(400, 401, 404, 413, 503))
async def detokenize(body: DetokenizeRequest, _: Auth, state: State) -> DetokenizeResponse:
    """The text of token ids (special tokens kept, as vLLM)."""
    return tokenization.detokenize(body, _serving(state), state.chat)


@router.get("/version", tags=["vllm"], response_model=VersionInfo,
            responses=documented(401))
async def version(_: Auth) -> VersionInfo:
    """The vLLM engine's version (vLLM's ``/version``) and this server's."""
    return VersionInfo(version=tokenization.engine_version(),
                       lapo_version=tokenization.server_version())
