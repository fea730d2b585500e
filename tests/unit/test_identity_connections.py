"""In Azure the app connects to Cosmos DB, Service Bus and the task runs queue with its managed identity (the
accounts allow no keys: infra/): COSMOS_AUTH=identity, SERVICEBUS_NAMESPACE and QUEUE_ACCOUNT_URL select that;
locally the keys stay. No network: the clients are only constructed."""

from __future__ import annotations

from azure.identity.aio import DefaultAzureCredential

from services.platform.bus import ServiceBusBus
from services.platform.cosmos import Cosmos
from services.platform.settings import COSMOS_EMULATOR_KEY, Settings
from services.tasks.queue import RunQueue


def test_cosmos_uses_the_key_locally_and_the_identity_in_azure() -> None:
    assert Cosmos(Settings())._credential() == COSMOS_EMULATOR_KEY
    credential = Cosmos(Settings(cosmos_auth="identity", cosmos_key=""))._credential()
    assert isinstance(credential, DefaultAzureCredential)


async def test_service_bus_uses_the_namespace_with_the_identity() -> None:
    bus = ServiceBusBus(Settings(bus_kind="service-bus", servicebus_namespace="sb-x.servicebus.windows.net"))
    await bus.open()
    try:
        assert bus._client is not None
        assert bus._client.fully_qualified_namespace == "sb-x.servicebus.windows.net"
        assert isinstance(bus._client._credential, DefaultAzureCredential)
    finally:
        await bus.close()


async def test_the_task_runs_queue_uses_the_account_url_with_the_identity() -> None:
    url = "https://stexample.queue.core.windows.net"
    client = RunQueue(Settings(queue_account_url=url, queue_connection_string="")).make_client()
    async with client:
        assert client.url.startswith(url + "/task-runs")
        assert isinstance(client.credential, DefaultAzureCredential)
    local = RunQueue(Settings()).make_client()
    async with local:
        assert local.account_name == "devstoreaccount1"
