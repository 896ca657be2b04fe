"""``POST /v1/chat/completions``: parse, hand the request to its `RequestScope` and to
`ChatService`, shape the response. Admission, lease, deadline and disconnects are the scope's
(`lapo.service.request_scope`); validation, prompts, generation and accounting are the service's.
"""

from __future__ import annotations

import json
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from lapo.service.auth import Auth
from lapo.service.errors import documented
from lapo.service.request_scope import RequestScope
from lapo.service.schedule import request_keyer
from lapo.service.schemas import ChatCompletion, ChatCompletionRequest
from lapo.service.state import State

logger = logging.getLogger(__name__)
router = APIRouter()


@router.post("/v1/chat/completions", tags=["openai"], response_model=ChatCompletion,
             responses=documented(400, 401, 404, 413, 429, 503, 504))
async def chat_completions(body: ChatCompletionRequest, request: Request, _: Auth,
                           state: State) -> Response:
    """OpenAI chat completions; with ``stream``, server-sent events."""
    scope = RequestScope.open(state, body.stream)
    scope.keyer = request_keyer(scope, state, body)
    if state.settings.log_prompts:  # off by default: logs never carry prompts otherwise
        logger.info("prompt id=%s %s", request.scope.get("state", {}).get("request_id"),
                    json.dumps([m.model_dump() for m in body.messages])[:4000])
    if body.stream:
        return await scope.open_stream(request, lambda model: state.chat.stream(
                                           body, model, scope.scheduled()),
                                       media_type="text/event-stream",
                                       headers={"Cache-Control": "no-cache"})
    response, headers, _ = await scope.complete(
        request, lambda model: state.chat.complete(body, model, scope.scheduled()))
    return JSONResponse(response.model_dump(), headers=headers)
