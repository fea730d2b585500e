"""Which Blob Storage account is which region (`REGION_STORAGE`), and one BlobStore per region.

Each region of a geo-replicated deployment is its own Storage account; metadata stays global in Cosmos DB.
`REGION` names the region this instance runs in: its account is the one `BLOB_CONNECTION_STRING` (or
`BLOB_ACCOUNT_URL`) names, where pushes land. Without `REGION_STORAGE` there is one region, and every region
a replication names is served from that one account.
"""

from __future__ import annotations

import asyncio

from services.platform.blobs import BlobStore
from services.platform.settings import Settings
from services.replication.rules import normalize_region


def regional_settings(settings: Settings, account: str) -> Settings:
    """The settings with a region's account in place of the instance's own (a connection string locally, an
    account URL with managed identity in Azure)."""
    if account.startswith(("https://", "http://")):
        return settings.model_copy(update={"blob_account_url": account, "blob_connection_string": ""})
    return settings.model_copy(update={"blob_connection_string": account, "blob_account_url": ""})


class RegionalStorage:
    """A BlobStore per region, opened on first use; the instance's own region shares `local`."""

    def __init__(self, settings: Settings, local: BlobStore) -> None:
        self._settings = settings
        self._accounts = settings.region_accounts()
        self.home = normalize_region(settings.region) if settings.region else ""
        self._local = local
        self._stores: dict[str, BlobStore] = {}
        self._opening = asyncio.Lock()

    @property
    def regions(self) -> list[str]:
        """The regions this deployment has storage for (empty: one region)."""
        return list(self._accounts)

    def has_storage(self, region: str) -> bool:
        return not self._accounts or normalize_region(region) in self._accounts

    def same_account(self, a: str, b: str) -> bool:
        """Whether two regions share a Storage account (a copy between them would be no copy at all)."""
        if not self._accounts:
            return True
        return self._account(a) == self._account(b)

    def _account(self, region: str) -> str:
        region = normalize_region(region)
        if region == self.home or region not in self._accounts:
            return self._accounts.get(self.home, "")
        return self._accounts[region]

    async def store(self, region: str) -> BlobStore:
        region = normalize_region(region)
        if not self._accounts or region == self.home or region not in self._accounts:
            return self._local
        async with self._opening:
            store = self._stores.get(region)
            if store is None:
                store = BlobStore(regional_settings(self._settings, self._accounts[region]))
                await store.open()
                self._stores[region] = store
        return store

    async def close(self) -> None:
        for store in self._stores.values():
            await store.close()
        self._stores.clear()


async def delete_registry_everywhere(settings: Settings, local: BlobStore, registry: str) -> None:
    """Delete the registry's container in every other region's account (a registry's deletion; its own
    account's container is the caller's)."""
    regions = RegionalStorage(settings, local)
    try:
        for region in regions.regions:
            store = await regions.store(region)
            if store is not local:
                await store.delete_registry_container(registry)
    finally:
        await regions.close()
