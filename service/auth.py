"""API-key check for the OpenAI routes: constant time per key, never logged or echoed."""

from __future__ import annotations

import hmac

from fastapi import Request

from lapo.service.errors import APIError


def require_key(request: Request) -> None:
    keys = request.app.state.settings.api_keys
    if not keys:
        return
    auth = request.headers.get("authorization", "")
    given = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
    ok = False
    for key in keys:  # every key compared, each in constant time
        ok |= hmac.compare_digest(given.encode(), key.get_secret_value().encode())
    if not ok:
        raise APIError(401, "Invalid or missing API key (Authorization: Bearer ...).",
                       type="authentication_error", code="invalid_api_key")
