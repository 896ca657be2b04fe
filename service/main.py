"""`lapo serve`: run the app under uvicorn."""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def run(**overrides) -> None:
    import uvicorn

    from lapo import env
    from service.app import create_app
    from service.settings import Settings

    env.configure()
    settings = Settings(**overrides)
    logger.info("lapo serve: model %s on http://%s:%d", settings.model, settings.host,
                settings.port)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port,
                log_level="info", timeout_graceful_shutdown=30)
