"""In Azure the app connects to Cosmos DB and Service Bus with its managed identity (the accounts allow no
keys: infra/): COSMOS_AUTH=identity and SERVICEBUS_NAMESPACE select that; locally the keys stay. No network:
the clients are only constructed."""

from __future__ import annotations

from azure.identity.aio import DefaultAzureCredential

from services.platform.bus import ServiceBusBus
from services.platform.cosmos import Cosmos
from services.platform.settings import COSMOS_EMULATOR_KEY, Settings


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
