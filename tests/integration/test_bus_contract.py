"""One contract every bus implementation passes (services/platform/bus.py): Azure Storage Queues on Azurite,
and Azure Service Bus through the real azure-servicebus SDK, speaking AMQP 1.0 to the test broker in
tests/servicebus_broker.py. A real namespace works too: set SERVICEBUS_CONNECTION_STRING (with topic
`contract-<random>` and subscriptions a, b provisioned, MaxDeliveryCount 3) to run the same suite against it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from services.platform.bus import Bus, OutgoingMessage, ReceivedMessage, open_bus
from services.platform.settings import Settings
from tests.servicebus_broker import ServiceBusTestBroker

pytestmark = pytest.mark.integration

SUBSCRIPTIONS = ["alpha", "beta"]
MAX_DELIVERIES = 3


@pytest.fixture(params=["storage-queues", "service-bus"])
async def bus(request: pytest.FixtureRequest, stack: dict[str, str]) -> AsyncIterator[Bus]:
    topic = "contract-" + uuid.uuid4().hex[:12]
    values = {
        "bus_kind": request.param,
        "queue_connection_string": stack["QUEUE_CONNECTION_STRING"],
        "bus_topic": topic,
        "bus_subscriptions": SUBSCRIPTIONS,
        "bus_max_deliveries": MAX_DELIVERIES,
        "bus_visibility_timeout_seconds": 30,
    }
    if request.param == "service-bus":
        with ServiceBusTestBroker([topic], SUBSCRIPTIONS, max_deliveries=MAX_DELIVERIES) as broker:
            instance = open_bus(Settings(**values, servicebus_connection_string=broker.connection_string))
            await instance.open()
            try:
                yield instance
            finally:
                await instance.close()
    else:
        instance = open_bus(Settings(**values))
        await instance.open()
        try:
            yield instance
        finally:
            await instance.close()


def message(note: str = "") -> OutgoingMessage:
    return OutgoingMessage(
        body=f'{{"note": "{note}"}}'.encode(),
        message_id=str(uuid.uuid4()),
        properties={"action": "push", "repository": "team/app", "mediaType": "application/json", "n": 7},
    )


async def receive_one(bus: Bus, subscription: str, dead_letters: bool = False) -> ReceivedMessage:
    for _ in range(10):
        receive = bus.receive_dead_letters if dead_letters else bus.receive
        got = await receive(subscription, max_messages=1, wait_seconds=2.0)
        if got:
            assert len(got) == 1
            return got[0]
    raise AssertionError(f"nothing arrived on {subscription} (dead letters: {dead_letters})")


async def test_publish_fans_out_to_every_subscription_with_properties_intact(bus: Bus) -> None:
    sent = message("fan-out")
    await bus.publish(sent)
    for subscription in SUBSCRIPTIONS:
        got = await receive_one(bus, subscription)
        assert got.body == sent.body
        assert got.message_id == sent.message_id
        assert got.content_type == "application/json"
        assert got.delivery_count == 1
        assert got.subscription == subscription
        for key, value in sent.properties.items():
            assert got.properties[key] == value
        await bus.complete(got)


async def test_completed_message_is_not_delivered_again(bus: Bus) -> None:
    await bus.publish(message("complete"))
    got = await receive_one(bus, "alpha")
    await bus.complete(got)
    assert await bus.receive("alpha", max_messages=5, wait_seconds=1.0) == []


async def test_abandoned_message_is_redelivered_with_a_higher_count(bus: Bus) -> None:
    sent = message("abandon")
    await bus.publish(sent)
    first = await receive_one(bus, "alpha")
    await bus.abandon(first)
    second = await receive_one(bus, "alpha")
    assert second.message_id == sent.message_id
    assert second.body == sent.body
    assert second.delivery_count == first.delivery_count + 1
    await bus.complete(second)


async def test_message_is_dead_lettered_after_max_deliveries(bus: Bus) -> None:
    sent = message("poison")
    await bus.publish(sent)
    deliveries = 0
    for _ in range(MAX_DELIVERIES + 2):
        got = await bus.receive("alpha", max_messages=1, wait_seconds=2.0)
        if not got:
            break
        deliveries += 1
        await bus.abandon(got[0])
    assert deliveries == MAX_DELIVERIES
    dead = await receive_one(bus, "alpha", dead_letters=True)
    assert dead.message_id == sent.message_id
    assert dead.body == sent.body
    assert dead.properties["action"] == "push"
    await bus.complete(dead)
    # the other subscription still has its own copy, untouched
    other = await receive_one(bus, "beta")
    assert other.message_id == sent.message_id and other.delivery_count == 1


async def test_explicit_dead_letter_keeps_the_reason(bus: Bus) -> None:
    sent = message("explicit")
    await bus.publish(sent)
    got = await receive_one(bus, "beta")
    await bus.dead_letter(got, "cannot-handle")
    dead = await receive_one(bus, "beta", dead_letters=True)
    assert dead.message_id == sent.message_id
    assert dead.properties["DeadLetterReason"] == "cannot-handle"
    assert await bus.receive("beta", max_messages=1, wait_seconds=0.5) == []


async def test_concurrent_publishes_all_arrive_once(bus: Bus) -> None:
    sent = [message(str(i)) for i in range(20)]
    await asyncio.gather(*(bus.publish(m) for m in sent))
    seen: list[str] = []
    for _ in range(20):
        for got in await bus.receive("alpha", max_messages=10, wait_seconds=2.0):
            seen.append(got.message_id)
            await bus.complete(got)
        if len(seen) >= len(sent):
            break
    assert sorted(seen) == sorted(m.message_id for m in sent)
