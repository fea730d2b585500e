"""Geo-replication's documents and queries.

    registries [/registry]  replication:<name>  {type: "replication", name, location, home, tags,
                                                 regionEndpointEnabled, zoneRedundancy, provisioningState,
                                                 statusMessage, statusTimestamp, ...} in the registry's
                                                 partition (deleted with the registry)

    artifacts  [/repo]      replication:<digest>  {type: "replicationStatus", digest, pushed, regions:
                                                  {<region>: {state: pending|copied|failed, time, lagMs,
                                                  reason, attempts}}} in the repository's partition: where
                                                  one image's blobs are (written by the worker)

The home region's replication is not stored until someone changes it (PATCH): until then it is made from
the registry document (services/replication/resources.py). Each region's entry of an image's status is
patched on its own (a `set` of `/regions/<region>`), so workers copying to different regions never
overwrite each other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

from azure.core.exceptions import HttpResponseError
from pydantic import BaseModel, Field

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
    # the backfill of a new replica (services/replication/backfill.py): images done of the total, where it
    # stopped ("<repository> <digest>", resumable) and when its runner last showed it was alive
    backfillDone: int = 0
    backfillTotal: int | None = None
    backfillCursor: str | None = None
    backfillLease: str | None = None


CopyState = Literal["pending", "copied", "failed"]


def status_id(digest: str) -> str:
    return f"replication:{digest}"


class RegionCopy(BaseModel):
    """Where one image stands in one region."""

    state: CopyState = "pending"
    time: str | None = None  # when it was copied (or failed for good)
    lagMs: int | None = None  # from the push being accepted to the copy being complete
    reason: str | None = None  # why the last attempt failed
    attempts: int = 0


class ImageReplicationDoc(Document):
    """An image's (a manifest's) copies in every region of its registry."""

    repo: str
    type: Literal["replicationStatus"] = "replicationStatus"
    digest: str
    pushed: str  # when the push was accepted (the event's timestamp)
    regions: dict[str, RegionCopy] = Field(default_factory=dict)


class ImageStatusStore:
    def __init__(self, cosmos: Cosmos) -> None:
        self._cosmos = cosmos

    async def get(self, repo: str, digest: str) -> ImageReplicationDoc | None:
        doc = await self._cosmos.read("artifacts", status_id(digest), repo)
        return ImageReplicationDoc.model_validate(doc) if doc else None

    async def start(self, doc: ImageReplicationDoc) -> ImageReplicationDoc:
        """Create the status if there is none; else the one there (regions added since get an entry)."""
        created = await self._cosmos.create("artifacts", doc)
        if created is not None:
            return ImageReplicationDoc.model_validate(created)
        found = await self.get(doc.repo, doc.digest)
        if found is None:  # deleted meanwhile (the image with it): start again
            return await self.start(doc)
        for region, entry in doc.regions.items():
            if region not in found.regions:
                await self.set_region(doc.repo, doc.digest, region, entry)
                found.regions[region] = entry
        return found

    async def set_region(self, repo: str, digest: str, region: str, entry: RegionCopy) -> bool:
        """Set one region's entry; False when the status is gone (the image was deleted)."""
        operations: list[dict[str, Any]] = [
            {"op": "set", "path": f"/regions/{region}", "value": entry.model_dump(exclude_none=True)}
        ]
        return await self._cosmos.patch("artifacts", status_id(digest), repo, operations)

    async def delete(self, repo: str, digest: str) -> bool:
        return await self._cosmos.delete("artifacts", status_id(digest), repo)

    async def of_registry(self, registry: str) -> AsyncIterator[ImageReplicationDoc]:
        """Every image status of a registry (cross-partition: a replica's removal only)."""
        sql = "SELECT * FROM c WHERE c.type = 'replicationStatus' AND STARTSWITH(c.repo, @prefix)"
        async for item in self._cosmos.query_across("artifacts", sql, {"@prefix": f"{registry}/"}):
            yield ImageReplicationDoc.model_validate(item)

    async def forget_region(self, repo: str, digest: str, region: str) -> None:
        operations: list[dict[str, Any]] = [{"op": "remove", "path": f"/regions/{region}"}]
        try:
            await self._cosmos.patch("artifacts", status_id(digest), repo, operations)
        except HttpResponseError:  # not there (any more): nothing to forget
            pass


class ReplicationStore:
    def __init__(self, cosmos: Cosmos) -> None:
        self._cosmos = cosmos

    async def get(self, registry: str, name: str) -> ReplicationDoc | None:
        doc = await self._cosmos.read("registries", replication_id(name), registry)
        return ReplicationDoc.model_validate(doc) if doc else None

    async def in_registry(self, registry: str) -> list[ReplicationDoc]:
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

    async def set_fields(self, registry: str, name: str, values: dict[str, Any]) -> bool:
        """Set some fields (the backfill's progress) without a read: False when the replication is gone."""
        operations: list[dict[str, Any]] = [{"op": "set", "path": f"/{k}", "value": v} for k, v in values.items()]
        return await self._cosmos.patch("registries", replication_id(name), registry, operations)

    async def unfinished(self) -> list[ReplicationDoc]:
        """Replicas still syncing or being deleted, of every registry (the timer that resumes their jobs)."""
        sql = "SELECT * FROM c WHERE c.type = 'replication' AND (c.syncing = true OR c.provisioningState = 'Deleting')"
        return [ReplicationDoc.model_validate(doc) async for doc in self._cosmos.query_across("registries", sql)]
