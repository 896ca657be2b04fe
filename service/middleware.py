"""ASGI middleware: request body size limit, one access-log line per request, CORS.

The access log names the method, path, status, duration and request id (``x-request-id``,
taken from the client when it is a plain token, else generated, and echoed back). It never
carries the body (prompts), the query string or headers (keys).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lapo.service.errors import APIError, json_error

if TYPE_CHECKING:
    from fastapi import FastAPI

    from lapo.service.settings import Settings

logger = logging.getLogger("lapo.service.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_METHODS_WITH_BODY = {"POST", "PUT", "PATCH"}


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with a 413 naming the limit and the size.

    The declared Content-Length is checked before anything is read; a chunked body is read
    up to the limit and then refused (the app sees the buffered body, replayed once).
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    def _too_large(self, size: str) -> APIError:
        return APIError(413, f"The request body is {size} bytes; this server accepts at most "
                        f"{self.max_bytes} bytes (LAPO_MAX_BODY_BYTES).",
                        param="body", code="request_too_large")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _METHODS_WITH_BODY:
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await json_error(self._too_large(declared.decode()))(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                return await json_error(self._too_large(f"more than {self.max_bytes}"))(
                    scope, receive, send)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # afterwards: disconnect notifications

        return await self.app(scope, replay, send)


class AccessLog:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started, status = time.monotonic(), 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            logger.info("%s %s %s %.1fms id=%s", scope["method"], scope["path"], status or "-",
                        1000 * (time.monotonic() - started), request_id)


def install(app: FastAPI, settings: Settings) -> None:
    """Outermost first: access log, CORS (only when origins are configured), body limit."""
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST"],
                           allow_headers=["authorization", "content-type", "x-request-id"],
                           expose_headers=["x-request-id", "x-lapo-declared-reasoning-tokens",
                                           "x-lapo-actual-reasoning-tokens",
                                           "x-lapo-budget-source", "x-lapo-budget-error",
                                           "x-lapo-enforced", "x-lapo-queue-wait-s",
                                           "retry-after"])
    app.add_middleware(AccessLog)
