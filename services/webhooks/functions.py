"""The webhook worker's functions (a Blueprint registered in function_app.py).

`deliver_webhooks` is bound to the `webhooks` subscription of the `registry-events` Service Bus topic. The
host completes the message when the function returns and abandons it when it raises (redelivered, then
dead-lettered after the subscription's MaxDeliveryCount). Locally the devhost feeds it from the storage
queue of the same subscription.
"""

from __future__ import annotations

import azure.functions as func

from services.platform.telemetry import telemetry
from services.webhooks.delivery import webhook_dispatcher

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.service_bus_topic_trigger(
    arg_name="message",
    topic_name="registry-events",
    subscription_name="webhooks",
    connection="SERVICEBUS_CONNECTION_STRING",
)
async def deliver_webhooks(message: func.ServiceBusMessage) -> None:
    """Deliver one registry event to every webhook that wants it."""
    with telemetry().consumer_span("webhooks", message.application_properties, message.message_id):
        await webhook_dispatcher().handle_message(message.get_body())
