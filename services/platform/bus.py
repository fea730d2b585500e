"""The bus port and its two adapters: the only module that speaks to Service Bus or Storage Queues.

The port is a topic with one subscription per consumer (`webhooks`, `scanning`, `replication`): a published
message reaches every subscription; each subscription's consumer receives it with a lock, then completes it
(done), abandons it (try again, after a delay where the transport allows one) or dead-letters it. A message
delivered `bus_max_deliveries` times without being completed is dead-lettered by the transport.

    ServiceBusBus      Azure Service Bus: topic `<bus_topic>` (registry-events), subscription per consumer,
                       application properties for filtering; dead-lettering after N deliveries is the
                       subscription's MaxDeliveryCount. Topic and subscriptions are provisioned (infra/).
    StorageQueueBus    Azure Storage Queues (Azurite locally): queue `<bus_topic>-<subscription>` per
                       subscription (publish = one send per queue), poison queue `<queue>-poison` after N
                       dequeues, the visibility timeout as the lock and as the backoff of an abandon.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.storage.queue import QueueMessage
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from services.platform.availability import STORAGE, DependencyTransport
from services.platform.settings import Settings

if TYPE_CHECKING:  # the Service Bus SDK is imported when a ServiceBusBus opens (a cold start never needs it here)
    from azure.servicebus import ServiceBusReceivedMessage
    from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver, ServiceBusSender

PropertyValue = str | int | float | bool


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    body: bytes
    message_id: str
    properties: Mapping[str, PropertyValue] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass(slots=True)
class ReceivedMessage:
    body: bytes
    message_id: str
    properties: dict[str, PropertyValue]
    content_type: str | None
    delivery_count: int  # 1 on the first delivery
    subscription: str
    handle: Any = field(repr=False)  # the transport's own message (and receiver), for settling it


class Bus(Protocol):
    """Publish to the topic; receive, complete, abandon and dead-letter per subscription."""

    subscriptions: tuple[str, ...]

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, message: OutgoingMessage) -> None: ...

    async def receive(
        self, subscription: str, max_messages: int = 1, wait_seconds: float = 1.0
    ) -> list[ReceivedMessage]: ...

    async def complete(self, message: ReceivedMessage) -> None: ...

    async def abandon(self, message: ReceivedMessage, delay_seconds: float = 0.0) -> None: ...

    async def dead_letter(self, message: ReceivedMessage, reason: str) -> None: ...

    async def receive_dead_letters(
        self, subscription: str, max_messages: int = 1, wait_seconds: float = 1.0
    ) -> list[ReceivedMessage]: ...


def open_bus(settings: Settings) -> Bus:
    """The bus the settings name (not yet opened)."""
    if settings.bus_kind == "service-bus":
        return ServiceBusBus(settings)
    return StorageQueueBus(settings)


# --- Azure Storage Queues -------------------------------------------------------------------------------

_POLL_MIN_SECONDS = 0.01
_POLL_MAX_SECONDS = 0.05  # an idle consumer asks about 20 times a second


def queue_name(topic: str, subscription: str) -> str:
    return f"{topic}-{subscription}".lower()


def poison_queue_name(topic: str, subscription: str) -> str:
    return queue_name(topic, subscription) + "-poison"


class StorageQueueBus:
    """One queue per subscription. Storage queues do not long-poll: `receive` polls until `wait_seconds`."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.subscriptions = tuple(settings.bus_subscriptions)
        self._service: QueueServiceClient | None = None
        self._queues: dict[str, QueueClient] = {}

    async def open(self) -> None:
        if self._service is not None:
            return
        # Without our transport the SDK's aiohttp session reads ~/.netrc and the proxy variables again on every
        # request (a thread hand-off per receive and publish): only when PROXY_FROM_ENVIRONMENT says so.
        transport = DependencyTransport(STORAGE, use_env_settings=self._settings.proxy_from_environment)
        service = QueueServiceClient.from_connection_string(self._settings.queue_connection_string, transport=transport)
        topic = self._settings.bus_topic
        for subscription in self.subscriptions:
            for name in (queue_name(topic, subscription), poison_queue_name(topic, subscription)):
                queue = service.get_queue_client(name)
                try:
                    await queue.create_queue()
                except ResourceExistsError:
                    pass
                self._queues[name] = queue
        self._service = service

    async def close(self) -> None:
        for queue in self._queues.values():
            await queue.close()
        self._queues.clear()
        if self._service is not None:
            await self._service.close()
            self._service = None

    def _queue(self, name: str) -> QueueClient:
        if self._service is None:
            raise RuntimeError("StorageQueueBus.open() was not awaited")
        return self._queues[name]

    async def publish(self, message: OutgoingMessage) -> None:
        text = _envelope(message)
        topic = self._settings.bus_topic
        await asyncio.gather(*(self._queue(queue_name(topic, s)).send_message(text) for s in self.subscriptions))

    async def receive(
        self, subscription: str, max_messages: int = 1, wait_seconds: float = 1.0
    ) -> list[ReceivedMessage]:
        topic = self._settings.bus_topic
        queue = self._queue(queue_name(topic, subscription))
        poison = self._queue(poison_queue_name(topic, subscription))
        received: list[ReceivedMessage] = []
        for raw in await self._poll(queue, max_messages, wait_seconds):
            if raw.dequeue_count is not None and raw.dequeue_count > self._settings.bus_max_deliveries:
                # Delivered N times and never completed: the poison queue, as the Functions host does it.
                await poison.send_message(raw.content)
                await queue.delete_message(raw)
                continue
            received.append(_from_envelope(raw, subscription, (queue, raw)))
        return received

    async def receive_dead_letters(
        self, subscription: str, max_messages: int = 1, wait_seconds: float = 1.0
    ) -> list[ReceivedMessage]:
        poison = self._queue(poison_queue_name(self._settings.bus_topic, subscription))
        return [
            _from_envelope(raw, subscription, (poison, raw))
            for raw in await self._poll(poison, max_messages, wait_seconds)
        ]

    async def _poll(self, queue: QueueClient, max_messages: int, wait_seconds: float) -> list[QueueMessage]:
        deadline = time.monotonic() + wait_seconds
        pause = _POLL_MIN_SECONDS
        while True:
            messages = [
                m
                async for m in queue.receive_messages(
                    max_messages=max_messages,
                    messages_per_page=max_messages,
                    visibility_timeout=self._settings.bus_visibility_timeout_seconds,
                )
            ]
            if messages or time.monotonic() >= deadline:
                return messages
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            pause = min(pause * 2, _POLL_MAX_SECONDS)

    async def complete(self, message: ReceivedMessage) -> None:
        queue, raw = message.handle
        try:
            await queue.delete_message(raw)
        except ResourceNotFoundError:
            pass  # its lock expired and someone else took it; that one will complete it

    async def abandon(self, message: ReceivedMessage, delay_seconds: float = 0.0) -> None:
        queue, raw = message.handle
        try:
            await queue.update_message(raw, visibility_timeout=max(0, round(delay_seconds)))
        except ResourceNotFoundError:
            pass

    async def dead_letter(self, message: ReceivedMessage, reason: str) -> None:
        queue, raw = message.handle
        poison = self._queue(poison_queue_name(self._settings.bus_topic, message.subscription))
        await poison.send_message(_envelope_text(raw.content, {"DeadLetterReason": reason}))
        try:
            await queue.delete_message(raw)
        except ResourceNotFoundError:
            pass


def _envelope(message: OutgoingMessage) -> str:
    return json.dumps(
        {
            "id": message.message_id,
            "contentType": message.content_type,
            "properties": dict(message.properties),
            "body": message.body.decode(),
        },
        separators=(",", ":"),
    )


def _envelope_text(text: str, extra_properties: Mapping[str, PropertyValue]) -> str:
    values = json.loads(text)
    values["properties"] = {**values.get("properties", {}), **extra_properties}
    return json.dumps(values, separators=(",", ":"))


def _from_envelope(raw: QueueMessage, subscription: str, handle: Any) -> ReceivedMessage:
    values = json.loads(raw.content)
    return ReceivedMessage(
        body=str(values["body"]).encode(),
        message_id=str(values["id"]),
        properties=dict(values.get("properties", {})),
        content_type=values.get("contentType"),
        delivery_count=int(raw.dequeue_count or 1),
        subscription=subscription,
        handle=handle,
    )


# --- Azure Service Bus ----------------------------------------------------------------------------------


class ServiceBusBus:
    """Topic and subscriptions on Service Bus; one sender, and one receiver per (subscription, sub-queue)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.subscriptions = tuple(settings.bus_subscriptions)
        self._client: ServiceBusClient | None = None
        self._sender: ServiceBusSender | None = None
        self._receivers: dict[tuple[str, bool], ServiceBusReceiver] = {}
        self._lock = asyncio.Lock()
        self._send_lock = asyncio.Lock()

    async def open(self) -> None:
        if self._client is None:
            from azure.servicebus.aio import ServiceBusClient

            if self._settings.servicebus_namespace:  # Azure: the managed identity, no keys
                from azure.identity.aio import DefaultAzureCredential

                self._client = ServiceBusClient(self._settings.servicebus_namespace, DefaultAzureCredential())
            else:
                self._client = ServiceBusClient.from_connection_string(self._settings.servicebus_connection_string)

    async def close(self) -> None:
        for receiver in self._receivers.values():
            await receiver.close()
        self._receivers.clear()
        if self._sender is not None:
            await self._sender.close()
            self._sender = None
        if self._client is not None:
            await self._client.close()
            self._client = None

    def _require_client(self) -> ServiceBusClient:
        if self._client is None:
            raise RuntimeError("ServiceBusBus.open() was not awaited")
        return self._client

    async def publish(self, message: OutgoingMessage) -> None:
        from azure.servicebus import ServiceBusMessage

        outgoing = ServiceBusMessage(
            message.body,
            message_id=message.message_id,
            content_type=message.content_type,
            application_properties=dict(message.properties),  # type: ignore[arg-type]
        )
        async with self._send_lock:  # an SDK sender is not safe for concurrent use
            if self._sender is None:
                self._sender = self._require_client().get_topic_sender(self._settings.bus_topic)
            await self._sender.send_messages(outgoing)

    async def _receiver(self, subscription: str, dead_letters: bool) -> ServiceBusReceiver:
        async with self._lock:
            receiver = self._receivers.get((subscription, dead_letters))
            if receiver is None:
                from azure.servicebus import ServiceBusSubQueue

                receiver = self._require_client().get_subscription_receiver(
                    self._settings.bus_topic,
                    subscription,
                    sub_queue=ServiceBusSubQueue.DEAD_LETTER if dead_letters else None,
                )
                self._receivers[(subscription, dead_letters)] = receiver
            return receiver

    async def receive(
        self, subscription: str, max_messages: int = 1, wait_seconds: float = 1.0
    ) -> list[ReceivedMessage]:
        return await self._receive(subscription, False, max_messages, wait_seconds)

    async def receive_dead_letters(
        self, subscription: str, max_messages: int = 1, wait_seconds: float = 1.0
    ) -> list[ReceivedMessage]:
        return await self._receive(subscription, True, max_messages, wait_seconds)

    async def _receive(
        self, subscription: str, dead_letters: bool, max_messages: int, wait_seconds: float
    ) -> list[ReceivedMessage]:
        receiver = await self._receiver(subscription, dead_letters)
        messages = await receiver.receive_messages(max_message_count=max_messages, max_wait_time=wait_seconds)
        return [_from_service_bus(m, subscription, receiver) for m in messages]

    async def complete(self, message: ReceivedMessage) -> None:
        receiver, raw = message.handle
        await receiver.complete_message(raw)

    async def abandon(self, message: ReceivedMessage, delay_seconds: float = 0.0) -> None:
        # Service Bus redelivers an abandoned message at once (no delay on abandon); the delay is a hint
        # the storage-queue transport honours.
        receiver, raw = message.handle
        await receiver.abandon_message(raw)

    async def dead_letter(self, message: ReceivedMessage, reason: str) -> None:
        receiver, raw = message.handle
        await receiver.dead_letter_message(raw, reason=reason, error_description=reason)


def _from_service_bus(
    raw: ServiceBusReceivedMessage, subscription: str, receiver: ServiceBusReceiver
) -> ReceivedMessage:
    properties: dict[str, PropertyValue] = {}
    for key, value in (raw.application_properties or {}).items():
        name = key.decode() if isinstance(key, bytes) else str(key)
        if isinstance(value, bytes):
            value = value.decode()
        properties[name] = value if isinstance(value, str | int | float | bool) else str(value)
    content_type = raw.content_type
    return ReceivedMessage(
        body=b"".join(raw.body) if not isinstance(raw.body, bytes | str) else _as_bytes(raw.body),
        message_id=str(raw.message_id),
        properties=properties,
        content_type=content_type,
        delivery_count=int(raw.delivery_count or 0) + 1,
        subscription=subscription,
        handle=(receiver, raw),
    )


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else body
