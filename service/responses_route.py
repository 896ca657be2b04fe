"""``POST /v1/responses`` (OpenAI's Responses API, create only; stateless): parse, translate
to a chat request (`lapo.service.responses`), hand it to its `RequestScope` and to
`ChatService`, shape the response or the event stream. The same admission, lease, deadline,
disconnect handling, auth and request metrics as ``/v1/chat/completions``.
"""

from __future__ import annotations

import json
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from lapo.service import responses
from lapo.service.auth import Auth
from lapo.service.errors import documented
from lapo.service.request_scope import RequestScope
from lapo.service.responses_schemas import ResponseObject, ResponsesRequest
from lapo.service.schedule import request_keyer
from lapo.service.state import State

logger = logging.getLogger(__name__)
router = APIRouter()


@router.post("/v1/responses", tags=["openai"], response_model=ResponseObject,
             responses=documented(400, 401, 404, 413, 429, 503, 504))
async def create_response(body: ResponsesRequest, request: Request, _: Auth,
                          state: State) -> Response:
    """OpenAI Responses (stateless: nothing is stored); with ``stream``, its SSE events."""
    chat_req = responses.to_chat(body)  # a 400 naming the Responses field, before admission
    scope = RequestScope.open(state, body.stream)
    scope.keyer = request_keyer(scope, state, chat_req)
    if state.settings.log_prompts:  # off by default: logs never carry prompts otherwise
        logger.info("prompt id=%s %s", request.scope.get("state", {}).get("request_id"),
                    json.dumps([m.model_dump() for m in chat_req.messages])[:4000])
    if body.stream:
        return await scope.open_stream(
            request, lambda model: responses.stream(state.chat, body, chat_req, model,
                                                    scope.scheduled()),
            media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    response, headers = await scope.complete(
        request, lambda model: responses.complete(state.chat, body, chat_req, model,
                                                  scope.scheduled()))
    return JSONResponse(response.model_dump(), headers=headers)
