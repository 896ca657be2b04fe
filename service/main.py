"""`lapo serve`: run the app under uvicorn, with graceful shutdown and fatal-engine exit.

SIGTERM (or Ctrl-C) starts a drain: the app stops admitting (503 ``shutting_down``; `/ready`
503 so load balancers stop routing), requests already admitted or queued run to their end for
up to ``shutdown_grace_s``, then the server stops and the process exits 0. A second signal
stops at once. When the engine dies past its restart budget the process exits with code 3.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

from lapo.service.state import ServiceState, service_state

if TYPE_CHECKING:
    import uvicorn
    from fastapi import FastAPI

logger = logging.getLogger(__name__)


def _busy(state: ServiceState) -> int:
    admission = state.admission
    leases = sum(e.leases for e in state.registry.history)
    return max(admission.active + admission.queued, leases)


def make_server(app: FastAPI, config: uvicorn.Config, grace_s: float) -> uvicorn.Server:
    import uvicorn

    state = service_state(app)

    class Server(uvicorn.Server):
        """uvicorn that drains before it stops, and can stop with an exit code."""

        exit_code = 0
        _loop: asyncio.AbstractEventLoop | None = None

        async def serve(self, sockets: list | None = None) -> None:
            self._loop = asyncio.get_running_loop()
            await super().serve(sockets)

        def request_exit(self, code: int) -> None:
            self.exit_code = code
            self.should_exit = True

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if state.shutting_down or self._loop is None:
                self.should_exit = self.force_exit = True  # second signal: stop now
                return
            state.shutting_down = True
            logger.info("signal %d: draining (grace %.0f s)", sig, grace_s)
            self._loop.call_soon_threadsafe(lambda: self._loop.create_task(self._drain()))

        async def _drain(self) -> None:
            deadline = time.monotonic() + grace_s
            while _busy(state) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            left = _busy(state)
            if left:
                logger.warning("grace period over with %d requests still running", left)
            else:
                logger.info("drained; stopping")
            self.should_exit = True

    server = Server(config)
    state.request_exit = server.request_exit
    return server


def run(**overrides: Any) -> None:
    import uvicorn

    from lapo import env
    from lapo.service.app import create_app
    from lapo.service.settings import Settings

    env.configure()
    settings = Settings(**overrides)
    logger.info("lapo serve: model %s on http://%s:%d", settings.model, settings.host,
                settings.port)
    app = create_app(settings)
    # The drain already waited for in-flight requests; uvicorn's own wait is a backstop.
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info",
                            access_log=False, timeout_graceful_shutdown=5)
    server = make_server(app, config, settings.shutdown_grace_s)
    server.run()
    if server.exit_code:
        sys.exit(server.exit_code)
