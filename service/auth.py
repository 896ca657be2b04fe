"""API-key check for the OpenAI routes (`Auth`): constant time per key, never logged or echoed."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from lapo.service.errors import APIError
from lapo.service.state import State


def require_key(request: Request, state: State) -> None:
    keys = state.settings.api_keys
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


Auth = Annotated[None, Depends(require_key)]
