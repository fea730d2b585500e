"""What a process opens once and closes when it stops: the clients of its process-wide singletons.

Each singleton (registry API, management API, outbox publisher, webhook dispatcher) registers its `close`
here when it is created; the devhost calls `close_all()` on shutdown so no connection pool is left open.
Under the Functions host the worker process simply ends.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("lifecycle")

_closers: list[Callable[[], Awaitable[None]]] = []


def close_on_shutdown(close: Callable[[], Awaitable[None]]) -> None:
    _closers.append(close)


async def close_all() -> None:
    """Close everything registered, newest first; one failure does not keep the others open."""
    while _closers:
        close = _closers.pop()
        try:
            await close()
        except Exception:
            log.exception("closing %r failed", close)
