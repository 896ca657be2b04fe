"""Every error in the OpenAI shape: {"error": {"message", "type", "param", "code"}}.

One place maps exceptions to responses. Internal exception text never reaches a client.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger(__name__)


class APIError(Exception):
    """An error a client gets, in the OpenAI shape; everything but status and message by
    keyword: ``APIError(404, "...", type="not_found_error", code="model_not_found")``."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param = status, message, type, param
        self.code, self.headers = code, headers


def invalid(message: str, param: str | None = None, code: str = "invalid_value") -> APIError:
    """A 400 naming the field (``param``), the limit and the value in ``message``."""
    return APIError(400, message, param=param, code=code)


def unavailable_error(message: str, code: str, retry_after: int = 5) -> APIError:
    """Every 503: the service cannot take the request now; retry after ``retry_after`` s."""
    return APIError(503, message, type="server_error", code=code,
                    headers={"Retry-After": str(retry_after)})


def error_body(status: int, message: str, type_: str, param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def json_error(exc: APIError) -> JSONResponse:
    return JSONResponse(error_body(exc.status, exc.message, exc.type, exc.param, exc.code),
                        status_code=exc.status, headers=exc.headers)


# pydantic's names for the members of a union in an error's location ("str",
# "literal['none','auto']", "function-after[...]", "list[...]", a model's class name such as
# "NamedToolChoice"): not fields of the request (OpenAI's fields are snake_case).
_UNION_MEMBER = re.compile(r"[\[\]('\"]|^(str|int|float|bool|list|dict|none|null)$"
                           r"|^[A-Z][A-Za-z0-9]+$")


def _loc(loc: Sequence[str | int]) -> str:
    """A validation error's field, dotted, without the union members pydantic names.

    >>> _loc(("body", "tool_choice", "literal['none','auto','required']"))
    'tool_choice'
    >>> _loc(("body", "tool_choice", "NamedToolChoice", "function"))
    'tool_choice.function'
    >>> _loc(("body", "input", "list[...]", 0, "message", "content"))
    'input.0.message.content'
    """
    parts = [str(p) for p in loc
             if p != "body" and not (isinstance(p, str) and _UNION_MEMBER.search(p))]
    return ".".join(parts) or "body"


def _deepest(errors: Sequence[dict]) -> dict:
    """The error to report: for a value no member of a union accepts, the member that got
    furthest into it (the longest location) names the real cause; otherwise the first."""
    return max(errors, key=lambda e: len(_loc(e.get("loc", ())).split(".")))


def _validation_message(err: dict) -> str:
    field = _loc(err.get("loc", ()))
    kind = err.get("type", "")
    value = err.get("input")
    shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
    if len(shown) > 80:
        shown = shown[:77] + "..."
    if kind == "extra_forbidden":
        return (f"Unsupported parameter '{field}': this server does not implement it "
                f"(refused rather than silently ignored).")
    if kind == "missing":
        return f"Missing required parameter '{field}'."
    if kind == "json_invalid":
        return "Request body is not valid JSON."
    return f"Invalid value for '{field}': {err.get('msg', 'invalid')} (got {shown})."


def install(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return json_error(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        errors = exc.errors()
        first = _deepest(errors) if errors else {"loc": ("body",), "msg": "invalid request"}
        param = _loc(first.get("loc", ()))
        code = "unsupported_parameter" if first.get("type") == "extra_forbidden" else (
            "invalid_value")
        return json_error(APIError(400, _validation_message(first), param=param, code=code))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        message = "Not found." if exc.status_code == 404 else str(exc.detail)
        return json_error(APIError(exc.status_code, message, type=kind,
                                  headers=getattr(exc, "headers", None)))

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        logger.exception("unhandled error on %s", request.url.path)
        return json_error(APIError(500, "Internal server error.", type="server_error"))


def sse_error(message: str, type_: str = "server_error", code: str | None = None) -> str:
    """An error event inside a stream that already answered 200."""
    import json

    return f"data: {json.dumps(error_body(0, message, type_, None, code))}\n\n"


def sse_generation_failed(engine_died: bool) -> str:
    """The error event of a stream whose generation failed: the engine died (the supervisor
    restarts it) or it failed otherwise."""
    if engine_died:
        return sse_error("The engine stopped while generating; the service is restarting it. "
                         "Retry the request.", code="engine_unavailable")
    return sse_error("The engine failed while generating.")


def documented(*statuses: int) -> dict:
    """OpenAPI ``responses`` for the error statuses a route can answer (OpenAI-shaped)."""
    from lapo.service.schemas import ErrorResponse

    reasons = {400: "Invalid request (the message names the field, the limit and the value)",
               401: "Missing or wrong API key", 403: "Wrong admin key",
               404: "Unknown model", 409: "A swap is already running",
               413: "Request body too large",
               429: "Admission queue full (see Retry-After)",
               503: "Not ready: loading, swapping, engine restarting or shutting down",
               504: "Per-request timeout reached"}
    return {s: {"model": ErrorResponse, "description": reasons[s]} for s in statuses}


def drop_422(app: FastAPI) -> None:
    """FastAPI documents validation errors as 422; this server answers them as 400."""
    build = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = build()
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
