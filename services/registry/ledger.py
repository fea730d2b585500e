"""The blob ledger: what garbage collection and quotas read and write (services/registry/collector.py has
the protocol that uses these documents, and why it is safe).

    registries [/registry]  in the registry's partition:
        storedBlob:<digest>  {type: "storedBlob", digest, size, state: "stored" | "collecting" | "deleting",
                              due (epoch seconds since when it may be unreferenced: the collector looks at
                              it a grace period later; null: a manifest referenced it when last looked
                              at), since (when a collector took it),
                              storageEtag (the bytes' ETag the collector will delete)}
                             one per digest the registry's storage holds; every write changes its `_etag`,
                             which is what pushes and the collector race on
        usage:storage        {type: "usage", storageBytes} the deduplicated bytes stored: a storedBlob
                             document is created and deleted in one batch with the change of this sum, so
                             a blob is counted exactly once, whatever dies when
    artifacts  [/repo]      in each repository's partition:
        gcfence              {type: "gcfence", epoch, pushes} `epoch` is bumped by the collector with every
                             batch of blob links it deletes, `pushes` by every manifest commit: a commit carries
                             "epoch unchanged since I checked the links" (store.py `commit_manifest`), a
                             link delete "no commit since I checked the manifests"; neither kind conflicts
                             with its own kind
        release:<uuid>       {type: "release", registry, digests, created} written in the batch that
                             deletes a manifest or a blob link: the blobs that may have lost their last
                             reference; the collector drains them into `due`

Deciding garbage reads these documents and queries manifests by digest (an index lookup): storage is never
listed, so a collection costs what it deletes, not what is stored.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal

from azure.core.exceptions import ResourceNotFoundError
from pydantic import Field

from services.platform.cosmos import BatchOperation, ConcurrentUpdate, Cosmos, Document, OperationNotFound, utcnow
from services.platform.readcache import process_marks
from services.platform.telemetry import telemetry
from services.registry.store import BlobLinkDoc, ManifestDoc

StoredState = Literal["stored", "collecting", "deleting"]
USAGE_ID = "usage:storage"
FENCE_ID = "gcfence"
ATTEMPTS = 16  # optimistic updates of one document before giving up (503 to a client)
# What references blobs: live manifests, and soft-deleted ones until purged (services/registry/softdelete.py).
MANIFEST_TYPES = "(c.type = 'manifest' OR c.type = 'deletedManifest')"
BATCH = 100  # operations in one transactional batch (Cosmos DB's limit)


class StoredBlobDoc(Document):
    """A blob the registry's storage holds: one per digest, so it is counted once however many repositories
    link it."""

    registry: str
    type: Literal["storedBlob"] = "storedBlob"
    digest: str
    size: int
    created: str = Field(default_factory=utcnow)
    state: StoredState = "stored"
    due: float | None = None
    since: float | None = None
    storageEtag: str | None = None
    pinned: float | None = None  # when a push last linked or wrote it (epoch seconds)


class StorageUsageDoc(Document):
    """The deduplicated bytes the registry's storage holds (listUsages `Size`)."""

    id: str = USAGE_ID
    registry: str
    type: Literal["usage"] = "usage"
    storageBytes: int = 0


class FenceDoc(Document):
    id: str = FENCE_ID
    repo: str
    type: Literal["gcfence"] = "gcfence"
    epoch: int = 0
    pushes: int = 0


class ReleaseDoc(Document):
    repo: str
    type: Literal["release"] = "release"
    registry: str
    digests: list[str]
    created: str = Field(default_factory=utcnow)


def stored_blob_id(digest: str) -> str:
    return f"storedBlob:{digest}"


def release_of(registry: str, repo: str, digests: list[str]) -> ReleaseDoc:
    return ReleaseDoc(id=f"release:{uuid.uuid4().hex}", repo=repo, registry=registry, digests=digests)


def released(registry: str, doc: ManifestDoc) -> ReleaseDoc:
    """What deleting the manifest may leave unreferenced, for the garbage collector: its blobs, and its own
    bytes when they are in storage (too large to keep inline)."""
    digests = list(dict.fromkeys(doc.blobs))
    if doc.content is None:
        digests.append(doc.digest)
    return release_of(registry, doc.repo, digests)


def fence_write(repo: str, epoch: int | None) -> BatchOperation:
    """The manifest commit's guard (services/registry/collector.py): the repository's fence must still be at
    `epoch` (read before the links were checked); None: there was no fence, so none may appear meanwhile."""
    if epoch is None:
        return ("create", (FenceDoc(repo=repo).to_item(),))
    changes = [{"op": "incr", "path": "/pushes", "value": 1}]
    return ("patch", (FENCE_ID, changes), {"filter_predicate": f"FROM c WHERE c.epoch = {int(epoch)}"})


def repo_prefix(registry: str) -> str:
    return f"{registry}/"


class BlobLedger:
    def __init__(self, cosmos: Cosmos) -> None:
        self._cosmos = cosmos

    # --- fences -------------------------------------------------------------------------------------------
    async def fence_epoch(self, repo: str) -> int | None:
        """The repository's fence epoch, None when it has none yet (one point read)."""
        found = await self._cosmos.read("artifacts", FENCE_ID, repo)
        return int(found.get("epoch", 0)) if found else None

    async def fence(self, repo: str) -> FenceDoc:
        """The fence as it is now (made if missing), with its ETag."""
        while True:
            found = await self._cosmos.read("artifacts", FENCE_ID, repo)
            if found is not None:
                return FenceDoc.model_validate(found)
            await self._cosmos.create("artifacts", FenceDoc(repo=repo))

    async def delete_link_fenced(self, fence: FenceDoc, link: BlobLinkDoc, release: ReleaseDoc | None = None) -> bool:
        """Delete a blob link and bump the repository's fence epoch, only if no manifest was committed in the
        repository since the fence was read (its `pushes`) and the link is as read (not made again): False
        when it lost such a race. Other link deletes do not count: collectors do not hold each other up."""
        bump = [{"op": "incr", "path": "/epoch", "value": 1}]
        operations: list[BatchOperation] = [
            ("patch", (FENCE_ID, bump), {"filter_predicate": f"FROM c WHERE c.pushes = {int(fence.pushes)}"}),
            ("delete", (link.id,), {"if_match_etag": link.etag}),
        ]
        if release is not None:
            operations.append(("create", (release.to_item(),)))
        try:
            await self._cosmos.batch("artifacts", link.repo, operations)
        except (ConcurrentUpdate, ResourceNotFoundError):  # changed, or gone meanwhile
            return False
        finally:
            process_marks().changed(link.repo)  # this instance's read caches forget the link (store.py)
        return True

    async def delete_links_fenced(self, fence: FenceDoc, links: list[BlobLinkDoc]) -> set[str]:
        """`delete_link_fenced` for many links of the fence's repository, up to BATCH - 1 in each batch with
        one epoch bump; the ids of the links deleted. A link changed or gone meanwhile is left out and the
        rest tried again; once a manifest was committed in the repository since the fence was read, no
        further link is deleted."""
        deleted: set[str] = set()
        bump = [{"op": "incr", "path": "/epoch", "value": 1}]
        guard: BatchOperation = (
            "patch",
            (FENCE_ID, bump),
            {"filter_predicate": f"FROM c WHERE c.pushes = {int(fence.pushes)}"},
        )
        try:
            for start in range(0, len(links), BATCH - 1):
                chunk = links[start : start + BATCH - 1]
                while chunk:
                    operations = [guard] + [("delete", (link.id,), {"if_match_etag": link.etag}) for link in chunk]
                    try:
                        await self._cosmos.batch("artifacts", fence.repo, operations)
                    except (ConcurrentUpdate, OperationNotFound) as exc:
                        if not exc.index:  # the fence moved (or went): a push committed meanwhile
                            return deleted
                        del chunk[exc.index - 1]  # that link was made again, or went: the others still go
                        continue
                    deleted.update(link.id for link in chunk)
                    break
        finally:
            process_marks().changed(fence.repo)  # this instance's read caches forget the links (store.py)
        return deleted

    async def links_among(self, registry: str, digests: list[str]) -> list[BlobLinkDoc]:
        """Every repository's links to any of `digests` (cross-partition: the collector only)."""
        sql = "SELECT * FROM c WHERE c.type = 'blob' AND ARRAY_CONTAINS(@ds, c.digest) AND STARTSWITH(c.repo, @p)"
        params = {"@ds": digests, "@p": repo_prefix(registry)}
        return [BlobLinkDoc.model_validate(item) async for item in self._cosmos.query_across("artifacts", sql, params)]

    async def referenced_among(self, registry: str, digests: list[str]) -> set[str]:
        """Which of `digests` a manifest of the registry needs: as a layer or config, or as its own bytes (a
        manifest too large to keep inline); a soft-deleted manifest's record counts as its manifest. Two
        index lookups, fanned out over partitions."""
        prefix = repo_prefix(registry)
        layers = (
            "SELECT VALUE b FROM c JOIN b IN c.blobs "
            f"WHERE {MANIFEST_TYPES} AND STARTSWITH(c.repo, @p) AND ARRAY_CONTAINS(@ds, b)"
        )
        own = (
            f"SELECT VALUE c.digest FROM c WHERE {MANIFEST_TYPES} AND STARTSWITH(c.repo, @p) "
            "AND ARRAY_CONTAINS(@ds, c.digest) AND NOT IS_DEFINED(c.content)"
        )
        found: set[str] = set()
        for sql in (layers, own):
            async for value in self._cosmos.query_across("artifacts", sql, {"@p": prefix, "@ds": digests}):
                found.add(str(value))
        return found

    # --- releases -----------------------------------------------------------------------------------------
    async def releases(self, registry: str, limit: int) -> list[ReleaseDoc]:
        sql = "SELECT * FROM c WHERE c.type = 'release' AND c.registry = @r"
        found: list[ReleaseDoc] = []
        async for item in self._cosmos.query_across("artifacts", sql, {"@r": registry}, limit):
            found.append(ReleaseDoc.model_validate(item))
            if len(found) >= limit:
                break
        return found

    async def drop_release(self, release: ReleaseDoc) -> None:
        await self._cosmos.delete("artifacts", release.id, release.repo)

    async def schedule(self, registry: str, digest: str, due: float) -> None:
        """Note that the blob may be unreferenced since `due`: the collector looks at it a grace period
        later (nothing when it is not stored)."""
        await self._cosmos.patch(
            "registries", stored_blob_id(digest), registry, [{"op": "set", "path": "/due", "value": due}]
        )

    async def schedule_many(self, registry: str, digests: list[str], due: float) -> None:
        """`schedule` for many blobs, BATCH to a batch (a digest not stored is left out and the rest tried
        again)."""
        for start in range(0, len(digests), BATCH):
            chunk = list(dict.fromkeys(digests[start : start + BATCH]))
            while chunk:
                operations: list[BatchOperation] = [
                    ("patch", (stored_blob_id(digest), [{"op": "set", "path": "/due", "value": due}]))
                    for digest in chunk
                ]
                try:
                    await self._cosmos.batch("registries", registry, operations)
                except OperationNotFound as exc:
                    del chunk[exc.index]
                    continue
                break

    # --- stored blobs -------------------------------------------------------------------------------------
    async def get(self, registry: str, digest: str) -> StoredBlobDoc | None:
        found = await self._cosmos.read("registries", stored_blob_id(digest), registry)
        return StoredBlobDoc.model_validate(found) if found else None

    async def due_after(self, registry: str, now: float, last: str, limit: int) -> list[StoredBlobDoc]:
        """Up to `limit` stored blobs unreferenced since `now` or before, with ids after `last`, in id order
        (keyset paging)."""
        sql = (
            "SELECT * FROM c WHERE c.registry = @r AND c.type = 'storedBlob' AND c.due <= @now AND c.id > @last "
            "ORDER BY c.id"
        )
        params = {"@r": registry, "@now": now, "@last": last}
        found: list[StoredBlobDoc] = []
        async for item in self._cosmos.query("registries", sql, params, registry, limit):
            found.append(StoredBlobDoc.model_validate(item))
            if len(found) >= limit:
                break
        return found

    async def stored_totals(self, registry: str) -> tuple[int, int]:
        """(how many blobs, how many bytes) the registry's stored-blob documents hold: one query of the
        registry's partition computing both aggregates at once (the recount). Every row it answers is added
        up, so an answer in several pages of partial aggregates sums right too; memory stays constant."""
        sql = "SELECT COUNT(1) AS blobs, SUM(c.size) AS bytes FROM c WHERE c.registry = @r AND c.type = 'storedBlob'"
        count = total = 0
        async for row in self._cosmos.query("registries", sql, {"@r": registry}, registry):
            count += int(row.get("blobs") or 0)
            total += int(row.get("bytes") or 0)
        return count, total

    async def all_stored(self, registry: str) -> AsyncIterator[StoredBlobDoc]:
        sql = "SELECT * FROM c WHERE c.registry = @r AND c.type = 'storedBlob'"
        async for item in self._cosmos.query("registries", sql, {"@r": registry}, registry, 1000):
            yield StoredBlobDoc.model_validate(item)

    async def replace_many(self, docs: list[StoredBlobDoc]) -> list[StoredBlobDoc | None]:
        """`replace` of many documents of one registry, BATCH to a transactional batch; each as written, or
        None where it changed or went meanwhile (that one is left out and the rest of its batch tried
        again: the others are written all the same)."""
        written: list[StoredBlobDoc | None] = [None] * len(docs)
        for start in range(0, len(docs), BATCH):
            pending = list(range(start, min(start + BATCH, len(docs))))
            while pending:
                operations: list[BatchOperation] = [
                    ("replace", (docs[i].id, docs[i].to_item()), {"if_match_etag": docs[i].etag}) for i in pending
                ]
                try:
                    results = await self._cosmos.batch("registries", docs[pending[0]].registry, operations)
                except (ConcurrentUpdate, OperationNotFound) as exc:
                    if exc.index is None:
                        raise
                    del pending[exc.index]
                    continue
                for i, result in zip(pending, results, strict=True):
                    written[i] = self._as_written(docs[i], result)
                break
        return written

    @staticmethod
    def _as_written(doc: StoredBlobDoc, result: dict[str, object]) -> StoredBlobDoc:
        """A batch operation's result as the document written (its body, else what was sent and the ETag)."""
        body = result.get("resourceBody")
        if isinstance(body, dict):
            return StoredBlobDoc.model_validate(body)
        return doc.model_copy(update={"etag": str(result["eTag"])})

    async def delete_counted_many(self, docs: list[StoredBlobDoc]) -> set[str]:
        """`delete_counted` for many documents of one registry: up to BATCH - 1 deletes and one change of the
        usage by their sizes in each batch; the ids deleted. A document changed or gone meanwhile is left
        out (and its size with it) and the rest tried again."""
        deleted: set[str] = set()
        for start in range(0, len(docs), BATCH - 1):
            chunk = docs[start : start + BATCH - 1]
            attempts = 0
            while chunk:
                registry = chunk[0].registry
                operations: list[BatchOperation] = [("delete", (doc.id,), {"if_match_etag": doc.etag}) for doc in chunk]
                change = [{"op": "incr", "path": "/storageBytes", "value": -sum(doc.size for doc in chunk)}]
                operations.append(("patch", (USAGE_ID, change)))
                try:
                    results = await self._cosmos.batch("registries", registry, operations)
                except (ConcurrentUpdate, OperationNotFound) as exc:
                    if exc.index is None:
                        raise
                    if exc.index < len(chunk):
                        del chunk[exc.index]  # changed or gone meanwhile: whoever deleted it took its size off
                        continue
                    attempts += 1  # the usage document is missing (a registry being emptied): make it
                    if attempts >= ATTEMPTS:
                        raise ConcurrentUpdate(f"storage usage of {registry}") from exc
                    await self._cosmos.create("registries", StorageUsageDoc(registry=registry))
                    continue
                deleted.update(doc.id for doc in chunk)
                _observe_usage(registry, results[-1] if results else None)
                break
        return deleted

    async def replace(self, doc: StoredBlobDoc) -> StoredBlobDoc:
        """Write back only if unchanged since read (ConcurrentUpdate otherwise)."""
        return StoredBlobDoc.model_validate(await self._cosmos.replace("registries", doc))

    async def create_counted(self, doc: StoredBlobDoc) -> StoredBlobDoc | None:
        """Create the document and add its size to the usage, in one batch; None when it exists already."""
        return await self._count(doc, ("create", (doc.to_item(),)), doc.size)

    async def delete_counted(self, doc: StoredBlobDoc) -> bool:
        """Delete the document (only as read) and take its size off the usage, in one batch: the size is
        taken off exactly once, however often this is tried. False when it changed or went meanwhile."""
        return await self._count(doc, ("delete", (doc.id,), {"if_match_etag": doc.etag}), -doc.size) is not None

    async def _count(self, doc: StoredBlobDoc, operation: BatchOperation, delta: int) -> StoredBlobDoc | None:
        registry = doc.registry
        incr: BatchOperation = ("patch", (USAGE_ID, [{"op": "incr", "path": "/storageBytes", "value": delta}]))
        for _ in range(ATTEMPTS):
            try:
                results = await self._cosmos.batch("registries", registry, [operation, incr])
            except ConcurrentUpdate:
                return None  # the storedBlob was there already (create) or changed (delete)
            except OperationNotFound as exc:
                if exc.index == 0:
                    return None  # the storedBlob went meanwhile (delete): whoever deleted it took its size off
                # The registry's first blob (or its usage went with a registry being emptied): make it (None
                # when another writer just did).
                await self._cosmos.create("registries", StorageUsageDoc(registry=registry))
                continue
            _observe_usage(registry, results[1] if len(results) > 1 else None)
            written = results[0].get("resourceBody") if results else None
            if operation[0] == "create":
                return StoredBlobDoc.model_validate(written) if written else await self.get(registry, doc.digest)
            return doc
        raise ConcurrentUpdate(f"storage usage of {registry}")

    async def storage_bytes(self, registry: str) -> int:
        found = await self._cosmos.read("registries", USAGE_ID, registry)
        used = StorageUsageDoc.model_validate(found).storageBytes if found else 0
        telemetry().observe_storage(registry, used)
        return used

    async def usage(self, registry: str) -> StorageUsageDoc | None:
        """The usage document with its ETag (every blob stored or deleted moves it: `_count`)."""
        found = await self._cosmos.read("registries", USAGE_ID, registry)
        return StorageUsageDoc.model_validate(found) if found else None

    async def set_storage_bytes(self, registry: str, value: int, read: StorageUsageDoc | None) -> bool:
        """Set the usage to a recount, only if it is still as `read` (None: there was none, so none may have
        been made since); False when a blob was stored or deleted meanwhile."""
        if read is None:
            return (
                await self._cosmos.create("registries", StorageUsageDoc(registry=registry, storageBytes=value))
                is not None
            )
        try:
            await self._cosmos.replace("registries", read.model_copy(update={"storageBytes": value}))
        except ConcurrentUpdate:
            return False
        telemetry().observe_storage(registry, value)
        return True


def _observe_usage(registry: str, result: dict[str, Any] | None) -> None:
    """ACR's StorageUsed from the usage patch's answer in a batch (its body holds the new sum)."""
    usage = result.get("resourceBody") if result else None
    if isinstance(usage, dict) and isinstance(usage.get("storageBytes"), int):
        telemetry().observe_storage(registry, usage["storageBytes"])
