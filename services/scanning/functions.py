"""The scanner's functions (a Blueprint registered in function_app.py).

`scan_images` is bound to the `scanning` subscription of the `registry-events` topic: every push (and
quarantine) event of an image is scanned. The host completes the message when the function returns and
abandons it when it raises (redelivered, then dead-lettered). `run_requested_scans` picks up the rescans
asked for (`acr scan run`) every 10 seconds; `rematch_reports` re-matches stored SBOMs once a minute when
the advisory database changed. Locally the devhost feeds and runs them the same way.
"""

from __future__ import annotations

import logging

import azure.functions as func

from services.platform.telemetry import telemetry
from services.scanning.worker import image_scanner

bp = func.Blueprint()  # type: ignore[no-untyped-call]
log = logging.getLogger("scanning")


@bp.service_bus_topic_trigger(
    arg_name="message",
    topic_name="registry-events",
    subscription_name="scanning",
    connection="SERVICEBUS_CONNECTION_STRING",
)
async def scan_images(message: func.ServiceBusMessage) -> None:
    """Scan the image a push event names."""
    with telemetry().consumer_span("scanning", message.application_properties, message.message_id):
        await image_scanner().handle_message(message.get_body())


@bp.timer_trigger(arg_name="timer", schedule="*/10 * * * * *", run_on_startup=False, use_monitor=False)
async def run_requested_scans(timer: func.TimerRequest) -> None:
    """Rescan the images a rescan was asked for."""
    scanned = await image_scanner().run_requested()
    if scanned:
        log.info("run_requested_scans: %d image(s) rescanned", scanned)


@bp.timer_trigger(arg_name="timer", schedule="0 * * * * *", run_on_startup=False, use_monitor=False)
async def rematch_reports(timer: func.TimerRequest) -> None:
    """Re-match stored SBOMs against an updated advisory database."""
    result = await image_scanner().rematch()
    if result.processed:
        log.info("rematch_reports: %d scan(s) matched again, %d report(s) replaced", result.processed, result.replaced)
