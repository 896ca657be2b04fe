"""Declared-length scheduling on the request path: a request that must wait is keyed by its
expected work before it queues.

Under ``LAPO_SCHEDULING=declared``, when every admission slot is busy, the request's key is
its declared reasoning budget plus the expected answer (`ChatService.expected_work`): an
explicit ``reasoning_budget`` gives it at once; otherwise the model writes its budget
statement first, in a short engine request on a lease of the active version but without a
slot (effort mode reuses that statement as its first phase). When a slot is free, nothing is
probed: the policy costs nothing while nothing waits. Nor when the line is full (the request
is refused anyway) or ``max_concurrency`` probes already run (probes never add more engine
requests than the slots do). A probe runs under the request's deadline and stops if the
client goes away. Any other failure leaves the request unkeyed (placed at its default), and
its own work then answers the error as usual.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import Request

from lapo.service.errors import APIError
from lapo.service.request_scope import RequestScope, until_disconnect
from lapo.service.scheduling import Scheduled
from lapo.service.schemas import ChatCompletionRequest
from lapo.service.state import ServiceState

logger = logging.getLogger(__name__)


async def key_request(scope: RequestScope, state: ServiceState, req: ChatCompletionRequest,
                      request: Request | None = None) -> Scheduled:
    """Set ``scope.key`` for a request that will wait under the declared policy; returns
    what the probe left for the request's work (its statement, on which model)."""
    admission = state.admission
    if (admission.policy != "declared" or not admission.would_wait or admission.saturated
            or admission.probing >= admission.max_concurrency):
        return Scheduled()
    entry = state.registry.acquire()
    if entry is None:
        return Scheduled()  # nothing to serve on: the scope refuses the request
    admission.probing += 1
    try:
        work = state.chat.expected_work(req, entry.handle)
        async with asyncio.timeout_at(scope.deadline):
            scope.key, statement = await (work if request is None
                                          else until_disconnect(request, work))
    except APIError as exc:
        if exc.status == 499:
            raise  # the client went away: nothing to queue
        return Scheduled()  # invalid: refused (and counted) by its own work
    except TimeoutError:
        return Scheduled()  # past its deadline: the scope answers 504
    except Exception as exc:  # noqa: BLE001 - an engine fault: the request is not keyed
        logger.warning("scheduling probe failed (%s): request queued unkeyed",
                       type(exc).__name__)
        return Scheduled()
    finally:
        admission.probing -= 1
        state.registry.release(entry)
    return Scheduled(statement=statement, model=entry.handle)
