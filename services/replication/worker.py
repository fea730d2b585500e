"""The replication worker: the consumer of the bus's `replication` subscription.

A push lands in the Storage account of the region that accepted it (this instance's, `REGION`); metadata is
global in Cosmos DB, so the manifest and its tags are visible everywhere at once and only the bytes have to
travel. For each pushed image the worker copies every blob it needs (config and layers; an index's
children and theirs; the manifest itself when it is too big to live inline in Cosmos DB) into every other
region of the registry that has an account of its own, with a server-side copy from a short-lived read SAS
(services/platform/blobs.py `copy_in`: staged, then moved into place, so a half-copied blob is never
visible). A referrer (signature, SBOM) is pushed as a manifest of its own and replicated by its own event.

- Idempotent: a region whose entry says `copied` is skipped, and a blob already in a region is not copied
  again; two events for the same image (one per tag) do the same work once.
- Regions fail alone: every region is tried, the ones that fail stay `pending` with the reason and the
  message is abandoned (the bus redelivers it with a growing delay); after `BUS_MAX_DELIVERIES` deliveries
  their entries become `failed` and the bus dead-letters the message.
- A `delete` drops the image's status (its manifest and tags are gone from every region already: metadata
  is global). An untag changes nothing in Storage.

The per-image status (services/replication/store.py ImageStatusStore) is what `/acr/v1` shows under
`replication` and `acr replication status` prints.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import uuid
from datetime import UTC, datetime

from services.events.models import EventMessage, EventTarget, RegistryEvent
from services.events.outbox import EventPublisher, outbox_for
from services.management.store import RegistryStore
from services.platform.blobs import BlobStore
from services.platform.cosmos import Cosmos, utcnow
from services.platform.lifecycle import close_on_shutdown
from services.platform.settings import Settings, get_settings
from services.platform.telemetry import telemetry
from services.registry.store import ArtifactStore, ManifestDoc, repo_key
from services.replication.regions import RegionalStorage
from services.replication.resources import list_replications
from services.replication.store import ImageReplicationDoc, ImageStatusStore, RegionCopy, status_id

log = logging.getLogger("replication")

COPY_CONCURRENCY = 4  # blobs copied at once into one region
COPY_SAS_SECONDS = 600  # the life of a source URL: long enough for a pending copy to start reading
REPLICATED_ACTIONS = frozenset({"push", "chart_push"})


class ReplicationIncomplete(Exception):
    """Some region did not get every blob this time: the message is to be redelivered."""


def lag_ms(pushed: str, now: datetime | None = None) -> int:
    start = datetime.fromisoformat(pushed.replace("Z", "+00:00"))
    return max(0, int(((now or datetime.now(UTC)) - start).total_seconds() * 1000))


async def blobs_of(artifacts: ArtifactStore, repo: str, manifest: ManifestDoc) -> list[str]:
    """Every blob an image needs in Storage: its layers and config, its children's (an index), and the
    manifests that are too big to be kept inline in Cosmos DB."""
    needed: dict[str, None] = dict.fromkeys(manifest.blobs)
    if manifest.content is None:
        needed[manifest.digest] = None
    for child in manifest.children:
        doc = await artifacts.get_manifest(repo, child)
        if doc is None:
            continue  # pushed without it being in the repository is refused; gone since: nothing to need
        needed.update(dict.fromkeys(doc.blobs))
        if doc.content is None:
            needed[doc.digest] = None
    return list(needed)


class ReplicationWorker:
    def __init__(self, settings: Settings, metadata: Cosmos | None = None, blobs: BlobStore | None = None) -> None:
        self._settings = settings
        self.metadata = metadata if metadata is not None else Cosmos(settings)
        self._local = blobs if blobs is not None else BlobStore(settings)
        self.regions = RegionalStorage(settings, self._local)
        self.artifacts = ArtifactStore(self.metadata)
        self.status = ImageStatusStore(self.metadata)
        self.events = EventPublisher(settings, self.metadata)
        self._opened = False
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        async with self._opening:
            if not self._opened:
                await self.metadata.open()
                await self._local.open()
                await self.events.open()
                self._opened = True

    async def close(self) -> None:
        await self.events.close()
        await self.regions.close()
        await self._local.close()
        await self.metadata.close()
        self._opened = False

    async def handle_message(self, body: bytes, delivery_count: int = 1) -> None:
        await self.open()
        message = EventMessage.model_validate_json(body)
        target = message.event.target
        repo = repo_key(message.registry, target.repository)
        if message.event.action == "delete":
            await self.status.delete(repo, target.digest)
            return
        if message.event.action not in REPLICATED_ACTIONS or message.event.region is not None:
            return  # a per-region push is an echo of a push replicated already
        final = delivery_count >= self._settings.bus_max_deliveries
        await self.replicate(message.registry, target.repository, target.digest, message.event.timestamp, final)

    async def replicate(self, registry: str, repository: str, digest: str, pushed: str, final: bool = False) -> None:
        """Copy one image into every region of its registry that lacks it (ReplicationIncomplete when some
        region failed; `final`: the last delivery, so failures are recorded as `failed`)."""
        doc = await RegistryStore(self.metadata).get_registry(registry)
        if doc is None or doc.provisioningState == "Deleting":
            return
        locations = [
            r.location for r in await list_replications(self.metadata, doc) if r.provisioningState != "Deleting"
        ]
        if len(locations) < 2:
            return  # one region: nothing to replicate
        repo = repo_key(registry, repository)
        manifest = await self.artifacts.get_manifest(repo, digest)
        if manifest is None:
            return  # deleted before it was replicated: nothing to copy
        source = self.regions.home or locations[0]
        entries = {
            region: RegionCopy(state="copied", time=pushed, lagMs=0)
            if self.regions.same_account(region, source)
            else RegionCopy()
            for region in locations
        }
        status = await self.status.start(
            ImageReplicationDoc(id=status_id(digest), repo=repo, digest=digest, pushed=pushed, regions=entries)
        )
        digests = await blobs_of(self.artifacts, repo, manifest)
        todo = [r for r in locations if status.regions.get(r, RegionCopy()).state != "copied"]
        results = await asyncio.gather(
            *(self._traced_copy(registry, repo, digests, region, source) for region in todo),
            return_exceptions=True,
        )
        if await self.artifacts.get_manifest(repo, digest) is None:
            # deleted while it was being copied: its status goes (the delete's own event may have come
            # first); the copies stay, as the blobs stay in the region that took the push
            await self.status.delete(repo, digest)
            return
        failed: list[str] = []
        for region, result in zip(todo, results, strict=True):
            previous = status.regions.get(region, RegionCopy())
            if isinstance(result, BaseException):
                reason = f"{type(result).__name__}: {str(result)[:300]}"
                log.warning("replicating %s@%s to %s failed: %s", repository, digest, region, reason)
                entry = RegionCopy(
                    state="failed" if final else "pending",
                    time=utcnow() if final else None,
                    reason=reason,
                    attempts=previous.attempts + 1,
                )
                failed.append(region)
            else:
                entry = RegionCopy(state="copied", time=utcnow(), lagMs=lag_ms(pushed), attempts=previous.attempts + 1)
                # the events first (committed to the outbox): a crash before the status is set repeats the
                # copy, which finds every blob there, and raises the same events again (same ids)
                await self._announce(registry, repository, manifest, region, pushed, entry.lagMs or 0)
            await self.status.set_region(repo, digest, region, entry)
        if failed:
            raise ReplicationIncomplete(f"{repository}@{digest} is not yet in {', '.join(failed)}")

    async def _announce(
        self, registry: str, repository: str, manifest: ManifestDoc, region: str, pushed: str, lag: int
    ) -> None:
        """ACR's per-region push (for the webhooks located in `region`) and our `replicated`, one of each per
        tag of the image (or one without a tag), through the outbox."""
        tags: list[str | None] = [t.name for t in await self.artifacts.tags_of(manifest.repo, manifest.digest)]
        events = []
        for tag in tags or [None]:
            target = EventTarget(
                mediaType=manifest.mediaType,
                size=manifest.size,
                digest=manifest.digest,
                length=manifest.size,
                repository=repository,
                tag=tag,
            )
            for action in ("push", "replicated"):
                key = f"{registry}/{repository}/{manifest.digest}/{tag}/{region}/{action}/{pushed}"
                events.append(
                    RegistryEvent(
                        id=str(uuid.uuid5(uuid.NAMESPACE_URL, key)),
                        action=action,
                        target=target,
                        registry=registry if action == "replicated" else None,
                        region=region,
                        lagMs=lag if action == "replicated" else None,
                    )
                )
        outbox = outbox_for(registry, manifest.repo, events)
        assert outbox is not None
        outbox.id = f"outbox:{uuid.uuid5(uuid.NAMESPACE_URL, f'{manifest.repo}/{manifest.digest}/{region}/{pushed}')}"
        if await self.metadata.create("artifacts", outbox) is None:
            return  # raised by an earlier run: the relay publishes it if that run could not
        await self.events.publish(outbox)

    async def _traced_copy(self, registry: str, repo: str, digests: list[str], region: str, source: str) -> int:
        with telemetry().span("replication copy", {"replication.region": region, "replication.blobs": len(digests)}):
            return await self.copy_into(registry, repo, digests, region, source)

    async def copy_into(self, registry: str, repo: str, digests: list[str], region: str, source: str) -> int:
        """Copy the blobs `region` lacks into it; returns how many it copied."""
        target = await self.regions.store(region)
        await target.create_registry_container(registry)
        slots = asyncio.Semaphore(COPY_CONCURRENCY)

        async def copy(blob: str) -> int:
            async with slots:
                if await target.size(registry, blob) is not None:
                    return 0  # already there: a blob is never copied twice
                origin = await self._origin(registry, blob, source, region)
                url = await origin.read_url(registry, blob, COPY_SAS_SECONDS)
                await target.copy_in(registry, blob, url)
                if self._settings.fault_kill_mid_copy:  # tests only: die as a crash would, mid-image
                    os.kill(os.getpid(), signal.SIGKILL)
                return 1

        return sum(await asyncio.gather(*(copy(blob) for blob in digests)))

    async def _origin(self, registry: str, blob: str, source: str, target: str) -> BlobStore:
        """Where to copy a blob from: the region that took the push, else any region that has it."""
        home = await self.regions.store(source)
        if await home.size(registry, blob) is not None:
            return home
        for region in self.regions.regions:
            if region in (source, target):
                continue
            store = await self.regions.store(region)
            if await store.size(registry, blob) is not None:
                return store
        raise LookupError(f"blob {blob} is in no region")


_worker: ReplicationWorker | None = None


def replication_worker() -> ReplicationWorker:
    global _worker
    if _worker is None:
        _worker = ReplicationWorker(get_settings())
        close_on_shutdown(_worker.close)
    return _worker
