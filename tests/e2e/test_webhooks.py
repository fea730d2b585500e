"""Webhooks end to end: created with the azure-mgmt-containerregistry SDK against the devhost's ARM-shaped
API, fed by skopeo pushes, received by a real HTTP receiver in the test."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.mgmt.containerregistry import ContainerRegistryManagementClient

from services.management.access import assign_role
from services.platform.cosmos import Cosmos
from tests.conftest import Devhost
from tests.e2e.clients import Skopeo, build_single_platform_image
from tests.entra_issuer import IssuerCredential, TestIssuer
from tests.integration.conftest import settings_from_env
from tests.webhook_receiver import WebhookReceiver

SUBSCRIPTION, GROUP = "00000000-0000-0000-0000-000000000000", "local-rg"
REGISTRY = "local"  # the devhost's default registry (the bare address)
HTTP = {"enforce_https": False}  # plain http on loopback, per call (carried into LRO polling)


async def _assign_owner(env: dict[str, str], principal: str, tenant: str) -> None:
    metadata = Cosmos(settings_from_env(env))
    await metadata.open()
    try:
        await assign_role(metadata, REGISTRY, principal, "Owner", tenant=tenant)
    finally:
        await metadata.close()


@pytest.fixture
def arm(registry_url: str, devhost: Devhost, entra_issuer: TestIssuer) -> Iterator[ContainerRegistryManagementClient]:
    """The management SDK signed in as an Owner of the registry (an Entra token from the test's issuer)."""
    owner = str(uuid.uuid4())
    asyncio.run(_assign_owner(devhost.env, owner, entra_issuer.tenant))
    credential = IssuerCredential(entra_issuer, owner)
    client = ContainerRegistryManagementClient(credential, SUBSCRIPTION, base_url=registry_url)  # type: ignore[arg-type]
    with client:
        yield client


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as instance:
        yield instance


def create_webhook(arm: ContainerRegistryManagementClient, name: str, **properties: Any) -> Any:
    poller = arm.webhooks.begin_create(
        GROUP,
        REGISTRY,
        name,
        {"location": "westeurope", "tags": {"team": "e2e"}, "properties": properties},
        polling_interval=0,
        **HTTP,
    )
    return poller.result()


def test_skopeo_push_reaches_the_receiver_with_custom_headers(
    arm: ContainerRegistryManagementClient,
    receiver: WebhookReceiver,
    skopeo: Skopeo,
    registry_host: str,
    repo_name: Callable[[str], str],
    tmp_path: Path,
) -> None:
    repo = repo_name("hooked")
    name = "e2e" + uuid.uuid4().hex[:12]
    hook = create_webhook(
        arm,
        name,
        serviceUri=f"{receiver.url}/acr",
        customHeaders={"Authorization": "Bearer e2e-secret-token"},
        actions=["push", "delete"],
        status="enabled",
        scope=f"{repo}:*",
    )
    assert hook.name == name and hook.provisioning_state == "Succeeded" and hook.scope == f"{repo}:*"
    try:
        layout, image = build_single_platform_image(tmp_path / "src", [1024], tag="src")
        skopeo.copy(layout.reference("src"), f"docker://{registry_host}/{repo}:v1", preserve_digests=True)
        receiver.wait_for(lambda r: len(r.events("/acr")) >= 1)
        [request] = receiver.on("/acr")
        event = request.json()
        assert event["action"] == "push"
        assert event["target"]["repository"] == repo and event["target"]["tag"] == "v1"
        assert event["target"]["digest"] == image.manifest.digest
        assert event["request"]["method"] == "PUT" and "skopeo" in event["request"]["useragent"].lower()
        assert request.headers["Authorization"] == "Bearer e2e-secret-token"

        skopeo.delete(f"docker://{registry_host}/{repo}@{image.manifest.digest}")
        receiver.wait_for(lambda r: len(r.events("/acr")) >= 2)
        assert receiver.events("/acr")[1]["action"] == "delete"
    finally:
        arm.webhooks.begin_delete(GROUP, REGISTRY, name, polling_interval=0, **HTTP).result()


def test_sdk_ping_list_events_callback_config_update_list_and_delete(
    arm: ContainerRegistryManagementClient, receiver: WebhookReceiver
) -> None:
    name = "e2e" + uuid.uuid4().hex[:12]
    create_webhook(
        arm,
        name,
        serviceUri=f"{receiver.url}/ping",
        customHeaders={"X-Api-Key": "a-very-long-secret-key"},
        actions=["push"],
        scope="nothing-pushes-here:*",
    )
    try:
        ping = arm.webhooks.ping(GROUP, REGISTRY, name, **HTTP)
        assert ping.id
        [request] = receiver.on("/ping")
        assert request.json()["action"] == "ping" and request.json()["id"] == ping.id
        assert request.headers["X-Api-Key"] == "a-very-long-secret-key"

        events = list(arm.webhooks.list_events(GROUP, REGISTRY, name, **HTTP))
        assert len(events) == 1
        assert events[0].event_request_message.content.id == ping.id
        assert events[0].event_request_message.request_uri == f"{receiver.url}/ping"
        assert events[0].event_response_message.status_code == "200"
        assert "a-very-long-secret-key" not in str(events[0].event_request_message.headers)

        config = arm.webhooks.get_callback_config(GROUP, REGISTRY, name, **HTTP)
        assert config.service_uri == f"{receiver.url}/ping"
        assert set(config.custom_headers) == {"X-Api-Key"}
        assert config.custom_headers["X-Api-Key"] != "a-very-long-secret-key"

        updated = arm.webhooks.begin_update(
            GROUP, REGISTRY, name, {"properties": {"status": "disabled"}}, polling_interval=0, **HTTP
        ).result()
        assert updated.status == "disabled"
        assert arm.webhooks.get(GROUP, REGISTRY, name, **HTTP).status == "disabled"
        assert name in {hook.name for hook in arm.webhooks.list(GROUP, REGISTRY, **HTTP)}
    finally:
        arm.webhooks.begin_delete(GROUP, REGISTRY, name, polling_interval=0, **HTTP).result()
    assert name not in {hook.name for hook in arm.webhooks.list(GROUP, REGISTRY, **HTTP)}
