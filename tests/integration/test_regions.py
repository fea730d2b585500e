"""Several regions locally: one Azurite serves an account per region (AZURITE_ACCOUNTS), each its own
storage, and the registry's settings know which account is which region."""

from __future__ import annotations

import hashlib

import pytest

from services.devhost.stack import LocalStack
from services.platform.blobs import BlobStore
from services.replication.regions import RegionalStorage
from tests.conftest import GEO_REGIONS
from tests.integration.conftest import settings_from_env

pytestmark = pytest.mark.integration


async def test_each_region_is_its_own_account(local_stack: LocalStack) -> None:
    settings = settings_from_env(local_stack.env() | local_stack.region_env())
    local = BlobStore(settings)
    await local.open()
    regions = RegionalStorage(settings, local)
    try:
        assert regions.regions == list(GEO_REGIONS) and regions.home == "westeurope"
        registry = "regions" + hashlib.sha256(b"step2").hexdigest()[:8]
        written: dict[str, str] = {}
        for region in GEO_REGIONS:
            store = await regions.store(region)
            await store.create_registry_container(registry)
            data = region.encode()
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            await store.put(registry, digest, data)
            written[region] = digest
            assert f"/{'devstoreaccount1' if region == 'westeurope' else 'acr' + region}/" in await store.read_url(
                registry, digest
            )
        for region in GEO_REGIONS:
            store = await regions.store(region)
            for other, digest in written.items():
                assert (await store.size(registry, digest) is not None) == (other == region), (region, other)
        assert await regions.store("westeurope") is local  # the instance's own region is its usual account
        for region in GEO_REGIONS:
            await (await regions.store(region)).delete_registry_container(registry)
    finally:
        await regions.close()
        await local.close()
