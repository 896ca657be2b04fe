"""`lapo swap PATH --url URL`: call a running service's admin API."""

from __future__ import annotations

import json
import os


def swap(url: str, path: str, version: str | None = None, timeout: float = 600.0,
         strategy: str | None = None) -> int:
    """POST /admin/models/swap; print the result; return a process exit code."""
    import httpx

    key = os.environ.get("LAPO_ADMIN_KEY")
    if not key:
        print("error: set LAPO_ADMIN_KEY to the server's admin key")
        return 2
    body = {"path": str(path)}
    if version:
        body["version"] = version
    if strategy:
        body["strategy"] = strategy
    try:
        r = httpx.post(f"{url.rstrip('/')}/admin/models/swap", json=body, timeout=timeout,
                       headers={"Authorization": f"Bearer {key}"})
    except httpx.HTTPError as exc:
        print(f"error: {url} is unreachable: {exc}")
        return 2
    print(json.dumps(r.json(), indent=2))
    return 0 if r.status_code == 200 else 1
