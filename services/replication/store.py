"""Geo-replication's documents and queries.

    registries [/registry]  replication:<name>  {type: "replication", name, location, home, tags,
                                                 regionEndpointEnabled, zoneRedundancy, provisioningState,
                                                 statusMessage, statusTimestamp, ...} in the registry's
                                                 partition (deleted with the registry)

The home region's replication is not stored until someone changes it (PATCH): until then it is made from
the registry document (services/replication/resources.py).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from services.platform.cosmos import Cosmos, Document, utcnow

ProvisioningState = Literal["Creating", "Updating", "Deleting", "Succeeded", "Failed"]


def replication_id(name: str) -> str:
    return f"replication:{name.lower()}"  # ARM names ignore case


class ReplicationDoc(Document):
    """A region of a Premium registry (the home region or a replica)."""

    registry: str
    type: Literal["replication"] = "replication"
    name: str
    location: str  # normalized: "westeurope"
    home: bool = False
    tags: dict[str, str] = Field(default_factory=dict)
    regionEndpointEnabled: bool = True
    zoneRedundancy: Literal["Enabled", "Disabled"] = "Disabled"
    provisioningState: ProvisioningState = "Succeeded"
    failed: bool = False  # the region could not be made ready
    syncing: bool = False  # the region is catching up with content pushed before it existed
    statusMessage: str = ""
    statusTimestamp: str = Field(default_factory=utcnow)
    created: str = Field(default_factory=utcnow)
    deleteOperation: str | None = None


class ReplicationStore:
    def __init__(self, cosmos: Cosmos) -> None:
        self._cosmos = cosmos

    async def get(self, registry: str, name: str) -> ReplicationDoc | None:
        doc = await self._cosmos.read("registries", replication_id(name), registry)
        return ReplicationDoc.model_validate(doc) if doc else None

    async def list(self, registry: str) -> list[ReplicationDoc]:
        sql = "SELECT * FROM c WHERE c.registry = @r AND c.type = 'replication'"
        found = [
            ReplicationDoc.model_validate(item)
            async for item in self._cosmos.query("registries", sql, {"@r": registry}, registry)
        ]
        return sorted(found, key=lambda doc: doc.id)

    async def create(self, doc: ReplicationDoc) -> ReplicationDoc | None:
        """Create it; None when one of that name exists already."""
        created = await self._cosmos.create("registries", doc)
        return ReplicationDoc.model_validate(created) if created is not None else None

    async def put(self, doc: ReplicationDoc) -> ReplicationDoc:
        return ReplicationDoc.model_validate(await self._cosmos.upsert("registries", doc))

    async def replace(self, doc: ReplicationDoc) -> ReplicationDoc:
        """Write back only if nobody else did since it was read (ConcurrentUpdate otherwise)."""
        return ReplicationDoc.model_validate(await self._cosmos.replace("registries", doc))

    async def delete(self, registry: str, name: str) -> bool:
        return await self._cosmos.delete("registries", replication_id(name), registry)
