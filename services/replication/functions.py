"""The replication worker's functions (a Blueprint registered in function_app.py).

`replicate_images` is bound to the `replication` subscription of the `registry-events` Service Bus topic:
completed when it returns, abandoned when it raises (redelivered with a growing delay, dead-lettered after
the subscription's MaxDeliveryCount). Locally the devhost feeds it from the subscription's storage queue.
`resume_replica_jobs` (a timer) resumes the backfills and replica removals a process left unfinished.
"""

from __future__ import annotations

import azure.functions as func

from services.platform.telemetry import telemetry
from services.replication.backfill import resume_jobs
from services.replication.worker import replication_worker

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.service_bus_topic_trigger(
    arg_name="message",
    topic_name="registry-events",
    subscription_name="replication",
    connection="SERVICEBUS_CONNECTION_STRING",
)
async def replicate_images(message: func.ServiceBusMessage) -> None:
    """Copy a pushed image's blobs into the registry's other regions (or forget a deleted one)."""
    with telemetry().consumer_span("replication", message.application_properties, message.message_id):
        await replication_worker().handle_message(message.get_body(), message.delivery_count or 1)


@bp.timer_trigger(arg_name="timer", schedule="*/15 * * * * *", run_on_startup=True, use_monitor=False)
async def resume_replica_jobs(timer: func.TimerRequest) -> None:
    """Resume the backfills of new replicas whose runner died, and finish removing deleted replicas."""
    await resume_jobs(replication_worker())
