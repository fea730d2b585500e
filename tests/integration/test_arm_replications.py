"""Geo-replication's ARM resource (`registries/{r}/replications/{name}`), over HTTP against the devhost and
through the official management SDK: shapes, the long-running create and delete, Premium only, the home
region, tier downgrades, who may do what, and hostile input (issue 12, step 1)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.containerregistry import models as m

from services.management.access import assign_role, assign_scope_role
from services.replication.store import ReplicationStore
from tests.conftest import Devhost
from tests.entra_issuer import IssuerCredential, TestIssuer
from tests.integration.conftest import Stores, unique_registry_name

pytestmark = pytest.mark.integration

API = {"api-version": "2025-11-01"}
PROVIDER = "Microsoft.ContainerRegistry"


@dataclass(frozen=True)
class Scene:
    devhost: Devhost
    issuer: TestIssuer
    subscription: str
    group: str
    owner: str  # Owner of the subscription
    reader: str  # Reader of the subscription
    pusher: str  # AcrPush on every registry made here (a data-plane role only)
    stranger: str  # Owner of another subscription

    def registry_path(self, registry: str, group: str | None = None) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{group or self.group}/providers/{PROVIDER}"
            f"/registries/{registry}"
        )

    def path(self, registry: str, replication: str = "", group: str | None = None) -> str:
        tail = f"/{replication}" if replication else ""
        return f"{self.registry_path(registry, group)}/replications{tail}"

    async def call(
        self, method: str, path: str, principal: str | None = "", body: Any = None, raw: bytes | None = None
    ) -> httpx.Response:
        headers = {} if principal is None else {"Authorization": f"Bearer {self.issuer.token(principal or self.owner)}"}
        async with httpx.AsyncClient(timeout=60) as http:
            if raw is not None:
                headers["Content-Type"] = "application/json"
                return await http.request(method, self.devhost.url + path, content=raw, headers=headers, params=API)
            return await http.request(method, self.devhost.url + path, json=body, headers=headers, params=API)

    async def status(self, reply: httpx.Response) -> str:
        """The operation's status once it has ended (as the SDK's poller follows it)."""
        for _ in range(300):
            async with httpx.AsyncClient(timeout=60) as http:
                got = await http.get(
                    reply.headers["Azure-AsyncOperation"],
                    headers={"Authorization": f"Bearer {self.issuer.token(self.owner)}"},
                )
            assert got.status_code == 200, got.text
            if got.json()["status"] != "InProgress":
                return str(got.json()["status"])
            await asyncio.sleep(0.1)
        raise AssertionError("the operation never ended")

    async def registry(self, sku: str = "Premium", location: str = "westeurope") -> str:
        name = unique_registry_name()
        reply = await self.call("PUT", self.registry_path(name), body={"location": location, "sku": {"name": sku}})
        assert reply.status_code == 201, reply.text
        return name


@pytest.fixture(scope="module")
async def scene(devhost: Devhost, stores: Stores, entra_issuer: TestIssuer) -> AsyncIterator[Scene]:
    subscription, group = str(uuid.uuid4()), "rg-" + uuid.uuid4().hex[:8]
    owner, reader, pusher, stranger = (str(uuid.uuid4()) for _ in range(4))
    tenant = entra_issuer.tenant
    await assign_scope_role(stores.metadata, f"/subscriptions/{subscription}", owner, "Owner", tenant=tenant)
    await assign_scope_role(stores.metadata, f"/subscriptions/{subscription}", reader, "Reader", tenant=tenant)
    await assign_scope_role(stores.metadata, f"/subscriptions/{uuid.uuid4()}", stranger, "Owner", tenant=tenant)
    yield Scene(devhost, entra_issuer, subscription, group, owner, reader, pusher, stranger)


async def test_a_replica_is_created_read_listed_updated_and_deleted(scene: Scene) -> None:
    name = await scene.registry()
    home = await scene.call("GET", scene.path(name))
    assert home.status_code == 200, home.text
    [only] = home.json()["value"]
    assert only["name"] == "westeurope" and only["location"] == "westeurope"
    assert only["id"] == scene.path(name, "westeurope")
    assert only["type"] == f"{PROVIDER}/registries/replications"
    assert only["properties"]["provisioningState"] == "Succeeded"
    assert only["properties"]["status"]["displayStatus"] == "Ready"

    made = await scene.call("PUT", scene.path(name, "eastus"), body={"location": "East US", "tags": {"a": "b"}})
    assert made.status_code == 201, made.text
    assert await scene.status(made) == "Succeeded"
    body = made.json()
    assert body["location"] == "eastus" and body["tags"] == {"a": "b"}
    assert body["properties"]["regionEndpointEnabled"] is True and body["properties"]["zoneRedundancy"] == "Disabled"
    assert body["properties"]["status"]["displayStatus"] == "Ready"
    assert (await scene.call("GET", scene.path(name, "EASTUS"))).json()["name"] == "eastus"  # names ignore case
    listed = (await scene.call("GET", scene.path(name))).json()["value"]
    assert [r["name"] for r in listed] == ["westeurope", "eastus"]

    again = await scene.call("PUT", scene.path(name, "eastus"), body={"location": "eastus", "tags": {"c": "d"}})
    assert again.status_code == 200 and again.json()["tags"] == {"c": "d"}
    moved = await scene.call("PUT", scene.path(name, "eastus"), body={"location": "japaneast"})
    assert moved.status_code == 400 and moved.json()["error"]["code"] == "InvalidResourceLocation"
    twice = await scene.call("PUT", scene.path(name, "second"), body={"location": "eastus"})
    assert twice.status_code == 409, twice.text

    disabled = await scene.call(
        "PATCH", scene.path(name, "eastus"), body={"properties": {"regionEndpointEnabled": False}}
    )
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["properties"]["status"]["displayStatus"] == "Disabled"
    assert disabled.json()["tags"] == {"c": "d"}  # PATCH changes only what it names
    zones = await scene.call("PATCH", scene.path(name, "eastus"), body={"properties": {"zoneRedundancy": "Enabled"}})
    assert zones.status_code == 400 and zones.json()["error"]["target"] == "properties.zoneRedundancy"
    home_tags = await scene.call("PATCH", scene.path(name, "westeurope"), body={"tags": {"home": "yes"}})
    assert home_tags.status_code == 200 and home_tags.json()["tags"] == {"home": "yes"}

    undeletable = await scene.call("DELETE", scene.path(name, "westeurope"))
    assert undeletable.status_code == 400 and undeletable.json()["error"]["code"] == "CannotDeleteHomeReplication"
    gone = await scene.call("DELETE", scene.path(name, "eastus"))
    assert gone.status_code == 202 and "Location" in gone.headers
    assert await scene.status(gone) == "Succeeded"
    assert (await scene.call("GET", scene.path(name, "eastus"))).status_code == 404
    assert (await scene.call("DELETE", scene.path(name, "eastus"))).status_code == 204
    listed = (await scene.call("GET", scene.path(name))).json()["value"]
    assert [(r["name"], r["tags"]) for r in listed] == [("westeurope", {"home": "yes"})]


async def test_replicas_are_premium_only_and_keep_a_registry_from_leaving_premium(scene: Scene) -> None:
    standard = await scene.registry("Standard")
    assert (await scene.call("GET", scene.path(standard))).json() == {"value": []}
    refused = await scene.call("PUT", scene.path(standard, "eastus"), body={"location": "eastus"})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "RegistrySkuNotSupported"

    premium = await scene.registry()
    assert (await scene.call("PUT", scene.path(premium, "eastus"), body={"location": "eastus"})).status_code == 201
    usages = (await scene.call("GET", scene.registry_path(premium) + "/listUsages")).json()["value"]
    assert {u["name"]: u["currentValue"] for u in usages}["Geo-replications"] == 2
    down = await scene.call("PATCH", scene.registry_path(premium), body={"sku": {"name": "Standard"}})
    assert down.status_code == 400 and "Geo-replications" in down.json()["error"]["message"]
    removed = await scene.call("DELETE", scene.path(premium, "eastus"))
    assert removed.status_code == 202 and await scene.status(removed) == "Succeeded"
    down = await scene.call("PATCH", scene.registry_path(premium), body={"sku": {"name": "Standard"}})
    assert down.status_code == 200, down.text


async def test_who_may_do_what(scene: Scene, stores: Stores) -> None:
    name = await scene.registry()
    await assign_role(stores.metadata, name, scene.pusher, "AcrPush", tenant=scene.issuer.tenant)
    assert (await scene.call("PUT", scene.path(name, "eastus"), body={"location": "eastus"})).status_code == 201
    changes: list[tuple[str, str, Any]] = [
        ("PUT", scene.path(name, "japaneast"), {"location": "japaneast"}),
        ("PUT", scene.path(name, "eastus"), {"location": "eastus", "tags": {"x": "y"}}),
        ("PATCH", scene.path(name, "eastus"), {"properties": {"regionEndpointEnabled": False}}),
        ("DELETE", scene.path(name, "eastus"), None),
    ]
    reads: list[tuple[str, str, Any]] = [("GET", scene.path(name), None), ("GET", scene.path(name, "eastus"), None)]
    for method, path, body in changes + reads:
        anonymous = await scene.call(method, path, principal=None, body=body)
        assert anonymous.status_code == 401, (method, path, anonymous.text)
        for who in (scene.stranger, scene.pusher):
            denied = await scene.call(method, path, principal=who, body=body)
            assert denied.status_code == 403 and denied.json()["error"]["code"] == "AuthorizationFailed", (method, who)
    for method, path, body in changes:
        denied = await scene.call(method, path, principal=scene.reader, body=body)
        assert denied.status_code == 403, (method, path, denied.text)
    for method, path, body in reads:
        assert (await scene.call(method, path, principal=scene.reader, body=body)).status_code == 200
    # through another resource group the registry is not there; nothing changed
    assert (await scene.call("GET", scene.path(name, "eastus", group="elsewhere"))).status_code == 404
    docs = await ReplicationStore(stores.metadata).in_registry(name)
    assert [(d.name, d.tags, d.regionEndpointEnabled) for d in docs] == [("eastus", {}, True)]


async def test_hostile_input_is_a_clear_4xx_and_changes_nothing(scene: Scene, stores: Stores) -> None:
    name = await scene.registry()
    cases: list[tuple[str, str, Any, bytes | None]] = [
        ("PUT", scene.path(name, "eastus"), {"location": "mars"}, None),
        ("PUT", scene.path(name, "eastus"), {"location": "../../x"}, None),
        ("PUT", scene.path(name, "eastus"), {"location": "e" * 500}, None),
        ("PUT", scene.path(name, "eastus"), {}, None),
        ("PUT", scene.path(name, "eastus"), {"location": ["eastus"]}, None),
        ("PUT", scene.path(name, "eastus"), None, b"{not json"),
        ("PUT", scene.path(name, "eastus"), None, b'{"location": "eastus", "pad": "' + b"x" * (2 << 20) + b'"}'),
        ("PUT", scene.path(name, "eastus"), {"location": "eastus", "tags": {str(i): "v" for i in range(51)}}, None),
        ("PUT", scene.path(name, "eastus"), {"location": "eastus", "properties": {"zoneRedundancy": "Maybe"}}, None),
        ("PUT", scene.path(name, "eastus"), {"location": "eastus", "properties": {"regionEndpointEnabled": "x"}}, None),
        ("PUT", scene.path(name, "abc"), {"location": "eastus"}, None),
        ("PUT", scene.path(name, "a" * 51), {"location": "eastus"}, None),
        ("PUT", scene.path(name, "east-us"), {"location": "eastus"}, None),
        ("PUT", scene.path(name, "%2e%2e%2fx"), {"location": "eastus"}, None),
        ("PATCH", scene.path(name, "nosuchreplica"), {"tags": {}}, None),
        ("POST", scene.path(name, "eastus"), {"location": "eastus"}, None),
        ("PUT", scene.path(name), {"location": "eastus"}, None),
    ]
    for method, path, body, raw in cases:
        reply = await scene.call(method, path, body=body, raw=raw)
        assert 400 <= reply.status_code < 500, (method, path, reply.status_code, reply.text[:300])
        assert reply.json()["error"]["code"], reply.text
        assert "e" * 100 not in reply.text  # nothing long is echoed back
    assert await ReplicationStore(stores.metadata).in_registry(name) == []


def test_the_management_sdk_drives_replications(scene: Scene) -> None:
    name = asyncio.run(scene.registry())
    group = scene.group
    client = ContainerRegistryManagementClient(
        IssuerCredential(scene.issuer, scene.owner),  # type: ignore[arg-type]
        scene.subscription,
        base_url=scene.devhost.url,
    )
    http = {"enforce_https": False, "polling_interval": 0}
    with client:
        made = client.replications.begin_create(
            group, name, "japaneast", m.Replication(location="japaneast", tags={"team": "sdk"}), **http
        ).result()
        assert made.provisioning_state == "Succeeded" and made.status.display_status == "Ready"
        assert made.region_endpoint_enabled is True and made.tags == {"team": "sdk"}
        got = client.replications.get(group, name, "japaneast", enforce_https=False)
        assert got.id == made.id and got.location == "japaneast"
        updated = client.replications.begin_update(
            group,
            name,
            "japaneast",
            m.ReplicationUpdateParameters(tags={"team": "sdk2"}, region_endpoint_enabled=False),
            **http,
        ).result()
        assert updated.tags == {"team": "sdk2"} and updated.status.display_status == "Disabled"
        assert [r.name for r in client.replications.list(group, name, enforce_https=False)] == [
            "westeurope",
            "japaneast",
        ]
        client.replications.begin_delete(group, name, "japaneast", **http).result()
        assert [r.name for r in client.replications.list(group, name, enforce_https=False)] == ["westeurope"]
