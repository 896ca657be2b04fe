"""``POST /v1/completions`` (OpenAI's legacy text completions): parse, hand the request to its
`RequestScope` and to `CompletionService`, shape the response. The same admission, lease,
deadline, disconnect handling, auth and request metrics as ``/v1/chat/completions``.
"""

from __future__ import annotations

import json
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from lapo.service.auth import Auth
from lapo.service.completions_schemas import Completion, CompletionRequest
from lapo.service.errors import documented
from lapo.service.request_scope import RequestScope
from lapo.service.state import State

logger = logging.getLogger(__name__)
router = APIRouter()


@router.post("/v1/completions", tags=["openai"], response_model=Completion,
             responses=documented(400, 401, 404, 413, 429, 503, 504))
async def completions(body: CompletionRequest, request: Request, _: Auth,
                      state: State) -> Response:
    """OpenAI legacy text completions (raw text, no chat template); with ``stream``, SSE."""
    scope = RequestScope.open(state, body.stream)
    if state.settings.log_prompts:  # off by default: logs never carry prompts otherwise
        logger.info("prompt id=%s %s", request.scope.get("state", {}).get("request_id"),
                    json.dumps(body.prompt)[:4000])
    if body.stream:
        return await scope.open_stream(request,
                                       lambda model: state.completions.stream(body, model),
                                       media_type="text/event-stream",
                                       headers={"Cache-Control": "no-cache"})
    response = await scope.complete(request,
                                    lambda model: state.completions.complete(body, model))
    return JSONResponse(response.model_dump())
