"""The tasks' functions (a Blueprint registered in function_app.py).

`relay_runs` runs every 5 seconds and sends the queue messages of runs written but never dispatched (the
process died between writing the run and sending its message, or the queue was down). Locally the devhost
runs it on the same schedule.
"""

from __future__ import annotations

import asyncio
import logging

import azure.functions as func

from services.platform.cosmos import Cosmos
from services.platform.lifecycle import close_on_shutdown
from services.platform.settings import get_settings
from services.tasks.queue import RunQueue
from services.tasks.scheduling import relay_runs as relay

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = logging.getLogger("tasks")

_clients: tuple[Cosmos, RunQueue] | None = None
_opening = asyncio.Lock()


async def relay_clients() -> tuple[Cosmos, RunQueue]:
    global _clients
    async with _opening:
        if _clients is None:
            settings = get_settings()
            metadata, queue = Cosmos(settings), RunQueue(settings)
            await metadata.open()
            await queue.open()
            close_on_shutdown(metadata.close)
            close_on_shutdown(queue.close)
            _clients = (metadata, queue)
    return _clients


@bp.timer_trigger(arg_name="timer", schedule="*/5 * * * * *", run_on_startup=False, use_monitor=False)
async def relay_runs(timer: func.TimerRequest) -> None:
    """Send the messages of queued runs that were never dispatched."""
    metadata, queue = await relay_clients()
    sent = await relay(metadata, queue, get_settings())
    if sent:
        log.info("relay_runs: %d run(s) dispatched", sent)
