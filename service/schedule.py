"""Declared-length scheduling on the request path: the probe that keys a waiting request.

Under ``LAPO_SCHEDULING=declared`` a request that must wait for an admission slot joins the
line at once, at the default key, and its key is found while it waits
(`Admission.acquire`'s ``keyer``): its declared reasoning budget plus the expected answer
(`ChatService.expected_work`). An explicit ``reasoning_budget`` gives it without the engine;
otherwise the model writes its budget statement in a short engine request, on a lease of the
active version but without a slot (effort mode reuses that statement as its first phase).
When the slot comes first the probe is cancelled (its engine request aborted): the policy
never delays a request, and costs nothing while nothing waits. At most ``max_concurrency``
probes run (they never add more engine requests than the slots do); the others wait their
turn, in arrival order. Until its probe returns, a waiter is placed at the median of recent
keys. A probe that fails leaves it there, and its own work answers any error as usual.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from lapo.service.errors import APIError
from lapo.service.request_scope import RequestScope
from lapo.service.scheduling import Scheduled
from lapo.service.schemas import ChatCompletionRequest
from lapo.service.state import ServiceState

logger = logging.getLogger(__name__)


def request_keyer(scope: RequestScope, state: ServiceState, req: ChatCompletionRequest
                  ) -> Callable[[], Awaitable[float | None]] | None:
    """The probe for this request under the declared policy (None under the others). It
    records the key on ``scope.key`` and what the request's work may reuse on
    ``scope.probe``."""
    if state.admission.policy != "declared":
        return None

    async def probe() -> float | None:
        async with state.admission.probes:  # at most max_concurrency at once, in order
            return await _probe()

    async def _probe() -> float | None:
        entry = state.registry.acquire()
        if entry is None:
            return None  # nothing to serve on: the scope refuses the request
        try:
            key, statement = await state.chat.expected_work(req, entry.handle)
        except APIError:
            return None  # invalid: refused (and counted) by its own work
        except Exception as exc:  # noqa: BLE001 - an engine fault: the request stays unkeyed
            logger.warning("scheduling probe failed (%s): request stays at the default key",
                           type(exc).__name__)
            return None
        finally:
            state.registry.release(entry)
        scope.key = key
        scope.probe = Scheduled(statement=statement, model=entry.handle)
        return key

    return probe
