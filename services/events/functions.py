"""The event pipeline's functions (a Blueprint registered in function_app.py).

`relay_outbox` runs every 5 seconds and republishes events that were committed but not published (the
process died between the commit and the publish, or the bus was down). Locally the devhost runs it on the
same schedule.
"""

from __future__ import annotations

import asyncio
import logging

import azure.functions as func

from services.events.outbox import EventPublisher
from services.platform.cosmos import Cosmos
from services.platform.lifecycle import close_on_shutdown
from services.platform.settings import get_settings

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = logging.getLogger("events")

_publisher: EventPublisher | None = None
_opening = asyncio.Lock()


async def outbox_publisher() -> EventPublisher:
    """The process's publisher for the relay, with its own metadata and bus clients (opened once)."""
    global _publisher
    async with _opening:
        if _publisher is None:
            settings = get_settings()
            metadata = Cosmos(settings)
            await metadata.open()
            publisher = EventPublisher(settings, metadata)
            await publisher.open()
            close_on_shutdown(metadata.close)
            close_on_shutdown(publisher.close)
            _publisher = publisher
    return _publisher


@bp.timer_trigger(arg_name="timer", schedule="*/5 * * * * *", run_on_startup=False, use_monitor=False)
async def relay_outbox(timer: func.TimerRequest) -> None:
    """Republish outbox events committed more than a few seconds ago and still unpublished."""
    relayed = await (await outbox_publisher()).relay()
    if relayed:
        log.info("relay_outbox: %d outbox document(s) published", relayed)
