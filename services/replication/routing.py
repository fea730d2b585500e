"""Regional reads: which region's Storage account serves a blob GET.

The region asked for is the regional endpoint's (`<registry>.<region>.geo.<domain>`, ACR's form) when the
request came through one of a replica whose regional endpoint is enabled, else this instance's (`REGION`).
A blob that has not reached that region yet is served from a region that has it (the push's first, then
the others in the registry's order), so content that exists somewhere is never a 404. The region that
served is named in the `X-Registry-Region` response header. Without regions (`REGION_STORAGE` empty) every
read is the instance's own account, as before, and no header is added.
"""

from __future__ import annotations

import re
import time

from starlette.requests import Request

from services.management.store import RegistryDoc
from services.platform.blobs import BlobStore
from services.platform.cosmos import Cosmos
from services.platform.settings import Settings
from services.replication.regions import RegionalStorage
from services.replication.resources import list_replications
from services.replication.rules import AZURE_REGIONS

REGION_HEADER = "X-Registry-Region"
REPLICAS_CACHE_SECONDS = 5.0
_REGIONAL = re.compile(r"^(?P<name>[a-z0-9]{5,50})\.(?P<region>[a-z0-9]{2,40})\.geo$")


def split_regional(label: str) -> tuple[str, str | None]:
    """`<name>.<region>.geo` (what is left of a Host once the domain is cut off) -> (name, region); any other
    label is a registry name without a region."""
    found = _REGIONAL.match(label)
    if found is None or found["region"] not in AZURE_REGIONS:
        return label, None
    return found["name"], found["region"]


class BlobRouter:
    def __init__(self, settings: Settings, metadata: Cosmos, local: BlobStore) -> None:
        self._settings = settings
        self._metadata = metadata
        self._local = local
        self.regions = RegionalStorage(settings, local)
        self.enabled = bool(self.regions.regions)
        self._replicas: dict[str, tuple[float, list[str], frozenset[str]]] = {}

    async def _registry_regions(self, registry: RegistryDoc) -> tuple[list[str], frozenset[str]]:
        """The registry's regions (home first) and those whose regional endpoint is enabled (cached a few
        seconds: an endpoint turned off stops being routed to within that)."""
        cached = self._replicas.get(registry.registry)
        now = time.monotonic()
        if cached is not None and cached[0] > now:
            return cached[1], cached[2]
        replicas = [r for r in await list_replications(self._metadata, registry) if r.provisioningState != "Deleting"]
        regions = [r.location for r in replicas] or [registry.location]
        enabled = frozenset(r.location for r in replicas if r.regionEndpointEnabled)
        if len(self._replicas) > 10_000:
            self._replicas.clear()
        self._replicas[registry.registry] = (now + REPLICAS_CACHE_SECONDS, regions, enabled)
        return regions, enabled

    def asked_region(self, request: Request) -> str | None:
        host = request.headers.get("host", "").rsplit(":", 1)[0].lower()
        suffix = "." + self._settings.registry_domain
        return split_regional(host[: -len(suffix)])[1] if host.endswith(suffix) else None

    async def serving(self, request: Request, registry: RegistryDoc, digest: str) -> tuple[BlobStore, str | None]:
        """The store to read `digest` from and its region (None: a deployment of one region)."""
        if not self.enabled:
            return self._local, None
        regions, enabled = await self._registry_regions(registry)
        asked = self.asked_region(request)
        wanted = asked if asked is not None and asked in enabled else self.regions.home
        order = list(dict.fromkeys([wanted, self.regions.home, *regions]))
        for region in order:
            if not region or not self.regions.has_storage(region):
                continue
            store = await self.regions.store(region)
            if await store.size(registry.registry, digest) is not None:
                return store, region
        return self._local, self.regions.home or None  # in no region: the read fails as it always did

    async def close(self) -> None:
        await self.regions.close()
