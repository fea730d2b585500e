"""Regional reads (issue 12, step 4): a blob GET through `<registry>.<region>.geo.<domain>` redirects to
that region's account and says so in `X-Registry-Region`; through the global endpoint, to this instance's
region; a region that has not caught up, whose endpoint is disabled or that is not one of the registry's
is never a 404: a region that has the blob serves it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from services.devhost.stack import LocalStack
from services.management.store import RegistryStore
from services.replication.regions import RegionalStorage
from services.replication.resources import ReplicationChanges, update_replication
from tests.conftest import Devhost, running_devhost
from tests.entra_issuer import TestIssuer
from tests.integration.conftest import Stores, settings_from_env
from tests.integration.geo import (
    Pushed,
    geo_devhost_env,
    geo_registry,
    push_multi_platform,
    regional_client,
    wait_replicated,
)

pytestmark = pytest.mark.integration

ACCOUNTS = {"westeurope": "devstoreaccount1", "eastus": "acreastus", "japaneast": "acrjapaneast"}


@pytest.fixture(scope="module")
def geo_devhost(
    local_stack: LocalStack, entra_issuer: TestIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Devhost]:
    with running_devhost(geo_devhost_env(local_stack, entra_issuer), tmp_path_factory.mktemp("geo-reads")) as host:
        yield host


def _layer(pushed: Pushed) -> str:
    return max(pushed.blobs, key=lambda d: len(pushed.blobs[d]))


def _pull(devhost: Devhost, registry: str, region: str | None, repository: str, digest: str) -> tuple[str, str, bytes]:
    """(serving region, redirect URL, bytes) of a blob GET through an endpoint."""
    with regional_client(devhost, registry, region) as http:
        reply = http.get(f"/v2/{repository}/blobs/{digest}")
    assert reply.status_code == 307, reply.text
    location = reply.headers["Location"]
    return reply.headers["X-Registry-Region"], location, httpx.get(location, timeout=60).content


async def test_each_regional_endpoint_redirects_to_its_own_account(geo_devhost: Devhost, stores: Stores) -> None:
    registry = await geo_registry(stores)
    with regional_client(geo_devhost, registry, None) as http:
        pushed = push_multi_platform(http, "app", "v1")
    await wait_replicated(stores, registry, "app", pushed.index)
    layer = _layer(pushed)
    for region in ("eastus", "japaneast", "westeurope", None):
        served, url, data = _pull(geo_devhost, registry, region, "app", layer)
        expected = region or "westeurope"  # the global endpoint: this instance's region
        assert served == expected and f"/{ACCOUNTS[expected]}/reg-{registry}/" in url, (region, url)
        assert data == pushed.blobs[layer]
    with regional_client(geo_devhost, registry, "eastus") as http:  # the rest of the API answers there too
        manifest = http.get("/v2/app/manifests/v1", headers={"Accept": "application/vnd.oci.image.index.v1+json"})
        assert manifest.status_code == 200 and manifest.content == pushed.blobs[pushed.index]
        assert http.get("/v2/app/tags/list").json()["tags"] == ["v1"]


async def test_a_region_without_the_blob_yet_is_served_from_one_that_has_it(
    geo_devhost: Devhost, stores: Stores
) -> None:
    registry = await geo_registry(stores)
    with regional_client(geo_devhost, registry, None) as http:
        pushed = push_multi_platform(http, "app", "v1")
    await wait_replicated(stores, registry, "app", pushed.index)
    layer = _layer(pushed)
    settings = settings_from_env(geo_devhost.env)
    regions = RegionalStorage(settings, stores.blobs)
    try:
        await (await regions.store("eastus")).delete(registry, layer)  # as if eastus had not caught up yet
    finally:
        await regions.close()
    served, url, data = _pull(geo_devhost, registry, "eastus", "app", layer)
    assert served == "westeurope" and "/devstoreaccount1/" in url and data == pushed.blobs[layer]
    served, _, _ = _pull(geo_devhost, registry, "japaneast", "app", layer)
    assert served == "japaneast"  # which has it


async def test_disabled_and_foreign_regional_endpoints_are_served_from_the_home_region(
    geo_devhost: Devhost, stores: Stores
) -> None:
    registry = await geo_registry(stores, regions=("westeurope", "eastus"))
    with regional_client(geo_devhost, registry, None) as http:
        pushed = push_multi_platform(http, "app", "v1")
    await wait_replicated(stores, registry, "app", pushed.index, regions=("westeurope", "eastus"))
    layer = _layer(pushed)
    assert _pull(geo_devhost, registry, "japaneast", "app", layer)[0] == "westeurope"  # not one of its regions
    assert _pull(geo_devhost, registry, "eastus", "app", layer)[0] == "eastus"
    doc = await RegistryStore(stores.metadata).get_registry(registry)
    assert doc is not None
    await update_replication(stores.metadata, doc, "eastus", ReplicationChanges(region_endpoint_enabled=False))
    for _ in range(100):  # the devhost reads the registry's regions again within seconds
        if _pull(geo_devhost, registry, "eastus", "app", layer)[0] == "westeurope":
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("a disabled regional endpoint is still routed to")
    with regional_client(geo_devhost, registry, None) as http:
        http.headers["Host"] = http.headers["Host"].replace(registry, f"{registry}.mars.geo")
        assert http.get(f"/v2/app/blobs/{layer}").status_code == 400  # no such region: not a registry name
