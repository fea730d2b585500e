"""Fixtures for the HTTP-level integration tests of the `/v2/` API.

`new_registry` creates a fresh registry (in-process, through the management functions, against the same
emulators the `devhost` serves from) and returns an httpx client whose requests carry that registry's
`Host` header, so every test works on storage nobody else touches. `proxy_devhost` is a second devhost
process with `BLOB_DOWNLOAD_MODE=proxy`, for the tests of streamed downloads and `Range`.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from services.management.access import assign_role, assign_scope_role, update_registry
from services.management.registries import create_registry
from services.platform.blobs import BlobStore
from services.platform.cosmos import Cosmos
from services.platform.settings import Settings
from tests.conftest import Devhost, running_devhost


@dataclass(frozen=True)
class Stores:
    settings: Settings
    metadata: Cosmos
    blobs: BlobStore


@dataclass(frozen=True)
class RegistryClient:
    """A registry created for one test, and a client bound to it by its `Host` header."""

    name: str
    port: int
    http: httpx.Client

    @property
    def login_server(self) -> str:
        return f"{self.name}.azurecr.localhost:{self.port}"


def settings_from_env(env: dict[str, str]) -> Settings:
    """The app's settings as the devhost process sees them (only the variables that are settings)."""
    fields = set(Settings.model_fields)
    values: dict[str, Any] = {key.lower(): value for key, value in env.items() if key.lower() in fields}
    return Settings(**values)


@pytest.fixture(scope="session")
async def stores(devhost: Devhost) -> AsyncIterator[Stores]:
    settings = settings_from_env(devhost.env)
    metadata, blobs = Cosmos(settings), BlobStore(settings)
    await metadata.open()
    await blobs.open()
    try:
        yield Stores(settings, metadata, blobs)
    finally:
        await metadata.close()
        await blobs.close()


@dataclass(frozen=True)
class RoleScene:
    """Two Premium registries and four Entra principals: the authorization matrix of the management routes."""

    registry: str
    other: str
    owner: str
    reader: str
    pusher: str  # AcrPush on `registry`: a data-plane role, nothing of the management API
    outsider: str  # Owner of `other`, nothing on `registry`

    def base(self, registry: str | None = None) -> str:
        return (
            "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local-rg/providers/"
            f"Microsoft.ContainerRegistry/registries/{registry or self.registry}"
        )


async def role_scene(stores: Stores, tenant: str) -> RoleScene:
    registry, other = unique_registry_name(), unique_registry_name()
    for name in (registry, other):
        await create_registry(stores.metadata, stores.blobs, stores.settings, name, "Premium")
    owner, reader, pusher, outsider = (str(uuid.uuid4()) for _ in range(4))
    await assign_role(stores.metadata, registry, owner, "Owner", tenant=tenant)
    await assign_role(stores.metadata, registry, reader, "Reader", tenant=tenant)
    await assign_role(stores.metadata, registry, pusher, "AcrPush", tenant=tenant)
    await assign_role(stores.metadata, other, outsider, "Owner", tenant=tenant)
    return RoleScene(registry, other, owner, reader, pusher, outsider)


def basic(username: str, password: str) -> dict[str, str]:
    """The Basic `Authorization` header of these credentials."""
    return {"Authorization": "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()}


def unique_registry_name() -> str:
    return "it" + uuid.uuid4().hex[:20]


def registry_client(devhost: Devhost, name: str) -> httpx.Client:
    port = int(devhost.host.rsplit(":", 1)[1])
    return httpx.Client(
        base_url=devhost.url,
        headers={"Host": f"{name}.azurecr.localhost:{port}"},
        follow_redirects=False,
        timeout=60,
    )


async def _fresh_registry(devhost: Devhost, stores: Stores) -> AsyncIterator[RegistryClient]:
    name = unique_registry_name()
    await create_registry(stores.metadata, stores.blobs, stores.settings, name)
    # These suites test the data plane, without credentials: the registry's `authDisabled` (dev/test only)
    # lets every caller in. Authentication and authorization have their own tests (test_auth_*.py).
    await update_registry(stores.metadata, name, auth_disabled=True)
    port = int(devhost.host.rsplit(":", 1)[1])
    with registry_client(devhost, name) as http:
        yield RegistryClient(name, port, http)


@pytest.fixture
async def registry(devhost: Devhost, stores: Stores) -> AsyncIterator[RegistryClient]:
    """A registry of this test's own, with a client whose requests name it by `Host`."""
    async for client in _fresh_registry(devhost, stores):
        yield client


@pytest.fixture
async def other_registry(devhost: Devhost, stores: Stores) -> AsyncIterator[RegistryClient]:
    """A second fresh registry, for the isolation tests."""
    async for client in _fresh_registry(devhost, stores):
        yield client


@pytest.fixture(scope="session")
def proxy_devhost(
    stack: dict[str, str], devhost: Devhost, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Devhost]:
    """A second devhost on the same emulators that streams blob bytes itself (`BLOB_DOWNLOAD_MODE=proxy`)."""
    with running_devhost(stack | {"BLOB_DOWNLOAD_MODE": "proxy"}, tmp_path_factory.mktemp("devhost-proxy")) as host:
        yield host


async def make_subscription_owner(env: dict[str, str], subscription: str, principal: str, tenant: str) -> None:
    """Give `principal` the Owner role on a subscription (the management API's creates need one), in-process
    against the emulators a devhost named by `env` uses."""
    cosmos = Cosmos(settings_from_env(env))
    await cosmos.open()
    try:
        await assign_scope_role(cosmos, f"/subscriptions/{subscription}", principal, "Owner", tenant=tenant)
    finally:
        await cosmos.close()
