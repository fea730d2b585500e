"""Online garbage collection of blobs, and the promises a push makes so that it always wins against it.

A blob of a registry is garbage when no manifest of any of its repositories needs it (as a layer or config,
or as the manifest's own bytes when too large to keep inline), and it has been so for the grace period
(`GC_GRACE_SECONDS`). The ledger (services/registry/ledger.py) says which blobs to look at: every stored
blob is looked at once, a grace period after it is stored (it may never be used), and again a grace period
after a delete released it (a `release` document, written in the delete's own batch, so no crash forgets
one). Nothing lists storage: a collection costs what it looks at.

The invariant: a committed manifest never references a blob whose bytes are gone. A manifest commit requires
every blob it references to be linked in its repository (`blob:<digest>`), so it suffices that a link
exists only while the bytes do, and that no commit slips past a link being deleted. Four documents carry
the race, each written only under an ETag or in one transactional batch:

    the stored blob   storedBlob:<digest>, state stored -> collecting -> deleting -> (gone)
    its links         blob:<digest> in each repository that linked it
    each repository's gcfence {epoch}
    the usage sum     usage:storage, changed in the same batch as the stored blob is created or deleted

The collector takes the due blobs a page at a time (PAGE, in id order) and runs each step for the whole page
before the next, the steps of any one blob in this order:
 1. marks it `collecting` (replace under its ETag; skipped if a push pinned it within the grace period,
    or another collector holds it and its lease has not run out);
 2. lists the blob's links and reads each linking repository's fence (its push count P), then asks
    whether any manifest needs the blob; if one does, it un-marks it (state stored, not due) and stops;
 3. deletes each link in a batch with "push count still P" and "link unchanged", bumping the fence's
    epoch; a batch that fails means a push committed in that repository meanwhile: it un-marks and stops;
    links made meanwhile by a stalled upload are found by listing again;
 4. reads the ETag of its bytes, then moves it to `deleting` with that ETag (under the document's ETag:
    fails if an upload pinned it since step 1);
 5. deletes the bytes only if their ETag is still that one (an upload that wrote them again keeps them);
 6. deletes the storedBlob document (under its ETag) and takes its size off the usage in one batch.

Batched, and why each batch keeps the per-blob rules. The storedBlob documents of a registry share one
partition, and the links and fence of a repository another, so a step's writes go in transactional batches
(up to 100 operations, Cosmos DB's limit) made of exactly the conditional operations listed above:
  - steps 1 and 4, and un-marking: one ETag-conditioned replace per blob (`BlobLedger.replace_many`);
  - step 3: per repository, one fence patch "push count still P" that bumps the epoch once, and one
    ETag-conditioned delete per link (`BlobLedger.delete_links_fenced`). A push committed after its fence
    read fails against any bump after its read exactly as against one bump per link, and a commit moves
    the push count, so once a batch fails on the fence no later batch of that repository is tried;
  - step 6: one ETag-conditioned delete per document and one change of the usage by the sum of their sizes
    (`BlobLedger.delete_counted_many`): a document and its size still go in the same batch.
A batch is all or nothing. When one of its operations fails (a push pinned that blob, a link was made
again, a document went), that operation is left out and the rest of the batch is written again, so one
blob re-pinned mid-page never holds up the others; the one left out stops where its single write would
have (step 4: it is read again and still moved when only a release was noted meanwhile, as `_change_held`
does; step 6: likewise deleted when still held as it was). Queries are per page: one listing of the
page's links (and one again after step 3), one reference check (two index lookups); each repository's fence
is read once per page. Steps 4 and 5 make one Storage call per blob each, at most `gc_concurrency` at once:
Azurite does not implement Blob Batch (`ContainerClient.delete_blobs` answers 400 InvalidInput there), so
the bytes are deleted one conditional request at a time. The bytes' ETag is read after the mark, so a write
of the bytes after that read is followed by a pin that changes the document, and step 4 fails.

A manifest push reads its repository's fence epoch E before it checks its links, and its commit batch
carries "fence epoch still E" and adds one to the push count (store.py `commit_manifest`). Take the
commit time C:
  - C before the collector's step 2 query: the query sees the manifest; the blob is kept.
  - C between that query and the link delete of step 3: the commit moved the push count, so the
    collector's batch (push count still P) fails; the blob is kept.
  - C after the link delete: the epoch moved. If E was read before, the commit fails and the push, looking
    again, finds the link gone; if after, the link check already found it gone. Either way the client is
    told MANIFEST_BLOB_UNKNOWN and uploads the blob again (never a manifest pointing at nothing).

Making a link (an upload finishing, deduplicated or not, a mount) pins the stored blob *after* linking
(`keep_blob`): it writes the storedBlob document under its ETag: `stored` is kept (the write restarts the
grace period), `collecting` is put back to `stored` (the collector's step 4 then fails), `deleting` or
gone means the bytes may be lost: an upload writes them again from what it still holds, then puts the
document back (step 5 or 6 then fails). Then it reads the document again: unchanged means no collector
marked it since the link existed, so any later collector lists that link in step 2 and goes through the
fence. Otherwise it pins again. A mount cannot write the bytes: it takes its link back (through the fence)
and the client uploads instead. Manifests too large to keep inline pin their own bytes the same way, and
look again after their commit.

Usage is decremented exactly once: only the batch of step 6 does it, and it deletes the document that
carries the size. A collector killed at any step leaves the blob `collecting` or `deleting` with its
`since`; once the lease (`GC_LEASE_SECONDS`) runs out, the next run takes it over and repeats the steps,
each of which is idempotent (a link already deleted is not there to delete, bytes already deleted are
gone, the document is deleted once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal, TypeVar

from services.platform.blobs import BlobStore
from services.platform.cosmos import ConcurrentUpdate, Cosmos
from services.platform.settings import Settings
from services.registry.ledger import ATTEMPTS, BlobLedger, FenceDoc, StoredBlobDoc, StoredState, stored_blob_id
from services.registry.store import BlobLinkDoc

log = logging.getLogger("registry.gc")

Rewrite = Callable[[], Awaitable[None]]
T = TypeVar("T")
R = TypeVar("R")
Outcome = Literal["deleted", "referenced", "busy"]
PAGE = 500  # due blobs read at a time
REPORTED_DIGESTS = 1000  # digests named in a report (the counts are always whole)


class BlobGone(Exception):
    """The blob is being deleted and this caller cannot write its bytes again (a mount)."""


# --- the push side ---------------------------------------------------------------------------------------
async def pin_stored(
    ledger: BlobLedger, registry: str, digest: str, size: int, rewrite: Rewrite | None, wrote: bool
) -> StoredBlobDoc:
    """Write the blob's storedBlob document as `stored` under its ETag (see the module docstring), and
    return it as written. `rewrite` writes the bytes again (None: cannot, `BlobGone` instead); `wrote` says
    whether this request has just written them itself."""
    guess_new = wrote  # bytes this request wrote are most likely new: try the create before any read
    for _ in range(ATTEMPTS):
        doc = None if guess_new else await ledger.get(registry, digest)
        guess_new = False
        now = time.time()
        if doc is None:
            created = await ledger.create_counted(
                StoredBlobDoc(
                    id=stored_blob_id(digest), registry=registry, digest=digest, size=size, due=now, pinned=now
                )
            )
            if created is None:
                continue  # made meanwhile: pin that one
            if not wrote:
                # A deduplicated upload saw the bytes before this document existed: a collector may have
                # deleted them since. The new document holds collectors off for the grace period.
                if rewrite is None:
                    raise BlobGone(digest)
                await rewrite()
            return created
        if doc.state == "deleting":
            if rewrite is None:
                raise BlobGone(digest)
            await rewrite()
        doc.state, doc.since, doc.storageEtag, doc.pinned = "stored", None, None, now
        if doc.due is not None:
            doc.due = max(doc.due, now)
        try:
            return await ledger.replace(doc)
        except ConcurrentUpdate:
            continue
    raise ConcurrentUpdate(f"stored blob {digest}")


async def keep_blob(
    ledger: BlobLedger,
    registry: str,
    digest: str,
    size: int,
    *,
    link: Callable[[], Awaitable[None]] | None,
    rewrite: Rewrite | None,
    wrote: bool,
) -> StoredBlobDoc:
    """Link (when `link` is given) and pin a blob whose bytes were just stored or found, so that no
    collector can take them from under the link (module docstring); the storedBlob document as pinned.
    `BlobGone` when the bytes are being deleted and `rewrite` is None."""
    if link is not None:
        await link()
    for _ in range(ATTEMPTS):
        pinned = await pin_stored(ledger, registry, digest, size, rewrite, wrote)
        again = await ledger.get(registry, digest)
        if again is not None and again.etag == pinned.etag:
            return pinned
        wrote = False  # a collector came in between: the bytes are no longer known to be ours
    raise ConcurrentUpdate(f"stored blob {digest}")


async def still_pinned(ledger: BlobLedger, pinned: StoredBlobDoc, rewrite: Rewrite) -> None:
    """After a commit that references the pinned blob without a link (a manifest's own bytes): if a collector
    touched the document since the pin, pin it again (writing the bytes again if they are being deleted)."""
    again = await ledger.get(pinned.registry, pinned.digest)
    if again is None or again.etag != pinned.etag:
        await keep_blob(ledger, pinned.registry, pinned.digest, pinned.size, link=None, rewrite=rewrite, wrote=False)


# --- the collector ---------------------------------------------------------------------------------------
@dataclass
class CollectionReport:
    registry: str
    dry_run: bool
    examined: int = 0
    deleted: int = 0
    bytes_freed: int = 0
    referenced: int = 0
    busy: int = 0
    released: int = 0
    digests: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "registry": self.registry,
            "dryRun": self.dry_run,
            "examined": self.examined,
            "blobsDeleted": self.deleted,
            "bytesFreed": self.bytes_freed,
            "referenced": self.referenced,
            "busy": self.busy,
            "released": self.released,
            "digests": self.digests,
        }


class GarbageCollector:
    """Collects a page of due blobs at a time, each step for the whole page at once, in batches (the module
    docstring: the steps per blob, in the same order, and why the batches keep them)."""

    def __init__(self, settings: Settings, cosmos: Cosmos, blobs: BlobStore) -> None:
        self._settings = settings
        self._ledger = BlobLedger(cosmos)
        self._blobs = blobs
        self.grace = settings.gc_grace_seconds
        self.lease = settings.gc_lease_seconds
        self._slots = asyncio.Semaphore(settings.gc_concurrency)

    async def run(self, registry: str, *, dry_run: bool = False) -> CollectionReport:
        """Collect the registry's garbage (or, with `dry_run`, say what would be collected now)."""
        report = CollectionReport(registry, dry_run)
        started = time.monotonic()
        now = time.time()
        # Draining releases only notes when blobs may have become unreferenced (a dry run does it too).
        report.released = await self._drain_releases(registry, now)
        async for page in self._due_pages(registry, now - self.grace):
            outcomes = await (self._preview(page, now) if dry_run else self._collect(page))
            for doc in page:
                outcome = outcomes.get(doc.id, "busy")
                report.examined += 1
                if outcome == "deleted":
                    report.deleted += 1
                    report.bytes_freed += doc.size
                    if len(report.digests) < REPORTED_DIGESTS:
                        report.digests.append(doc.digest)
                elif outcome == "referenced":
                    report.referenced += 1
                else:
                    report.busy += 1
        log.info(
            "gc %s%s: %d blob(s) deleted, %d bytes freed, %d referenced, %d busy, %d release(s) in %.1f s",
            registry,
            " (dry run)" if dry_run else "",
            report.deleted,
            report.bytes_freed,
            report.referenced,
            report.busy,
            report.released,
            time.monotonic() - started,
        )
        return report

    async def _due_pages(self, registry: str, cutoff: float) -> AsyncIterator[list[StoredBlobDoc]]:
        """The blobs unreferenced since `cutoff` or before, a page at a time, each once (keyset paging by id:
        what one page changes does not move the next)."""
        last = ""
        while True:
            page = await self._ledger.due_after(registry, cutoff, last, PAGE)
            if not page:
                return
            yield page
            last = page[-1].id

    async def _drain_releases(self, registry: str, now: float) -> int:
        drained = 0
        while True:
            releases = await self._ledger.releases(registry, PAGE)
            if not releases:
                return drained
            for release in releases:
                await self._ledger.schedule_many(registry, release.digests, now)
                await self._ledger.drop_release(release)
                drained += 1

    async def _each(self, items: Iterable[T], call: Callable[[T], Awaitable[R]]) -> list[R]:
        """`call` on every item, at most `gc_concurrency` at once."""

        async def one(item: T) -> R:
            async with self._slots:
                return await call(item)

        return await asyncio.gather(*(one(item) for item in items))

    async def _preview(self, page: list[StoredBlobDoc], now: float) -> dict[str, Outcome]:
        outcomes: dict[str, Outcome] = {}
        candidates = []
        for doc in page:
            if doc.state == "stored" and doc.pinned is not None and doc.pinned > now - self.grace:
                outcomes[doc.id] = "busy"
            else:
                candidates.append(doc)
        if candidates:
            needed = await self._ledger.referenced_among(page[0].registry, [doc.digest for doc in candidates])
            for doc in candidates:
                outcomes[doc.id] = "referenced" if doc.digest in needed else "deleted"
        return outcomes

    async def _collect(self, page: list[StoredBlobDoc]) -> dict[str, Outcome]:
        registry = page[0].registry
        outcomes: dict[str, Outcome] = {}
        held = await self._mark(page)
        marked = {doc.digest: doc for doc in held if doc.state == "collecting"}
        if marked:
            # Step 2: the links, then the fences of their repositories, then the references.
            links = await self._ledger.links_among(registry, list(marked))
            fences: dict[str, FenceDoc] = {}
            for fence in await self._each(dict.fromkeys(link.repo for link in links), self._ledger.fence):
                fences[fence.repo] = fence
            needed = await self._ledger.referenced_among(registry, list(marked))
            kept = [marked.pop(digest) for digest in needed]
            outcomes |= {doc.id: "referenced" for doc in kept}
            await self._release_marks(kept, due=None)
            # Step 3: the links go, each only if no manifest was committed in its repository since.
            doomed: dict[str, list[BlobLinkDoc]] = {}
            for link in links:
                if link.digest in marked:
                    doomed.setdefault(link.repo, []).append(link)
            gone: set[str] = set()
            for ids in await self._each(
                doomed.items(), lambda item: self._ledger.delete_links_fenced(fences[item[0]], item[1])
            ):
                gone |= ids
            lost = {link.digest for repo_links in doomed.values() for link in repo_links if link.id not in gone}
            # Links made meanwhile by an upload that stalled between its link and its pin: next time.
            if marked:
                lost |= {link.digest for link in await self._ledger.links_among(registry, list(marked))}
            given_back = [marked.pop(digest) for digest in lost & set(marked)]
            outcomes |= {doc.id: "busy" for doc in given_back}
            await self._release_marks(given_back, due=time.time())
        finishing = [doc for doc in held if doc.state == "deleting"] + list(marked.values())
        outcomes |= await self._delete(finishing)
        return outcomes

    async def _mark(self, page: list[StoredBlobDoc]) -> list[StoredBlobDoc]:
        """Step 1: the blobs of the page now held by this collector (their `since`): not those pinned lately
        or held by another collector, nor those that changed since the page was read."""
        now = time.time()
        taking = []
        for doc in page:
            if doc.state == "stored":
                if doc.pinned is not None and doc.pinned > now - self.grace:
                    continue  # pinned lately: a push may be about to reference it
                state: StoredState = "collecting"
            elif doc.since is not None and doc.since > now - self.lease:
                continue  # another collector holds it
            else:
                state = doc.state  # a dead collector's blob is taken over where it stood
            taking.append(doc.model_copy(update={"state": state, "since": now}))
        return [doc for doc in await self._ledger.replace_many(taking) if doc is not None]

    async def _delete(self, docs: list[StoredBlobDoc]) -> dict[str, Outcome]:
        """Steps 4 to 6 for blobs held `collecting` or `deleting`."""
        outcomes: dict[str, Outcome] = {}
        collecting = [doc for doc in docs if doc.state == "collecting"]
        storage_etags = await self._each(collecting, lambda doc: self._blobs.etag(doc.registry, doc.digest))
        moving = [
            doc.model_copy(update={"state": "deleting", "storageEtag": etag})
            for doc, etag in zip(collecting, storage_etags, strict=True)
        ]
        deleting = [doc for doc in docs if doc.state == "deleting"]
        for doc, etag, moved in zip(collecting, storage_etags, await self._ledger.replace_many(moving), strict=True):
            if moved is None:  # changed since marked: by a push (no longer held), or a release noted

                def to_deleting(held: StoredBlobDoc, etag: str | None = etag) -> None:
                    held.state, held.storageEtag = "deleting", etag

                moved = await self._change_held(doc, to_deleting)
            if moved is None:
                outcomes[doc.id] = "busy"  # a push pinned it again
            else:
                deleting.append(moved)
        await self._each(
            [doc for doc in deleting if doc.storageEtag is not None],
            lambda doc: self._blobs.delete_if_unchanged(doc.registry, doc.digest, str(doc.storageEtag)),
        )
        gone = await self._ledger.delete_counted_many(deleting)
        for doc in deleting:
            if doc.id not in gone:
                gone_now = await self._delete_held(doc)
                outcomes[doc.id] = "deleted" if gone_now else "busy"
            else:
                outcomes[doc.id] = "deleted"
        return outcomes

    async def _delete_held(self, doc: StoredBlobDoc) -> bool:
        """Step 6 again for one blob whose document changed since it was moved to `deleting`: deleted still
        if this collector holds it as it was (only a release was noted meanwhile)."""
        current = await self._ledger.get(doc.registry, doc.digest)
        if (
            current is None
            or current.state != "deleting"
            or current.since != doc.since
            or current.storageEtag != doc.storageEtag
        ):
            return False
        return await self._ledger.delete_counted(current)

    async def _release_marks(self, docs: list[StoredBlobDoc], due: float | None) -> None:
        """Give the blobs back (state stored): not due when a manifest needs them, else due again."""
        back = [doc.model_copy(update={"state": "stored", "since": None, "due": due}) for doc in docs]
        for doc, written in zip(docs, await self._ledger.replace_many(back), strict=True):
            if written is None:
                await self._release_mark(doc, due)

    async def _release_mark(self, doc: StoredBlobDoc, due: float | None) -> None:
        """Give the blob back (state stored): not due when a manifest needs it, else due again."""

        def release(held: StoredBlobDoc) -> None:
            held.state, held.since, held.due = "stored", None, due

        await self._change_held(doc, release)

    async def _change_held(self, doc: StoredBlobDoc, change: Callable[[StoredBlobDoc], None]) -> StoredBlobDoc | None:
        """Write `change` to a blob this collector holds (its `since`), under the ETag; a write that only
        noted a release meanwhile is read again and the change repeated. None once the blob is no longer
        held (a push pinned it, another collector took it over, or it is gone)."""
        since = doc.since
        for _ in range(ATTEMPTS):
            change(doc)
            try:
                return await self._ledger.replace(doc)
            except ConcurrentUpdate:
                current = await self._ledger.get(doc.registry, doc.digest)
                if current is None or current.state != "collecting" or current.since != since:
                    return None
                doc = current
        return None


RECOUNT_ATTEMPTS = 5  # sums tried before a recount gives up on a registry that is never quiet


@dataclass(frozen=True)
class Recount:
    registry: str
    blobs: int
    storage_bytes: int
    previous: int
    applied: bool = True

    def to_json(self) -> dict[str, object]:
        return {
            "registry": self.registry,
            "blobs": self.blobs,
            "storageBytes": self.storage_bytes,
            "previous": self.previous,
            "applied": self.applied,
        }


async def recount_storage(ledger: BlobLedger, registry: str, attempts: int = RECOUNT_ATTEMPTS) -> Recount:
    """Sum the stored blobs of the registry and set its usage to that (a check of the incremental count: the
    two agree unless a write was lost).

    Pushes go on meanwhile. Every blob stored or deleted changes its storedBlob document and the usage in one
    batch, so the usage document's ETag moves with each; the recount reads the usage (and its ETag), sums the
    sizes (`BlobLedger.stored_totals`: one aggregate query), then writes the sum under that ETag. The write
    succeeds only if no blob was stored or deleted while it summed, i.e. the documents it read were the
    registry's whole set at one moment, and the sum is then exact; otherwise it sums again, up to `attempts`
    times, and then leaves the usage as it is (`applied` False: the incremental count stands, the sum found
    is reported)."""
    count = total = previous = 0
    for _ in range(attempts):
        before = await ledger.usage(registry)
        previous = before.storageBytes if before else 0
        count, total = await ledger.stored_totals(registry)
        if await ledger.set_storage_bytes(registry, total, before):
            if previous != total:
                log.warning("recount %s: usage was %d bytes, the stored blobs sum to %d", registry, previous, total)
            return Recount(registry, count, total, previous)
    log.warning(
        "recount %s: blobs were stored or deleted during each of %d sums; usage left as it is", registry, attempts
    )
    return Recount(registry, count, total, previous, applied=False)


async def collect_all(settings: Settings, cosmos: Cosmos, blobs: BlobStore, registries: list[str]) -> int:
    """One collection of each registry (the timer); the blobs deleted in all."""
    collector = GarbageCollector(settings, cosmos, blobs)
    deleted = 0
    for registry in registries:
        try:
            deleted += (await collector.run(registry)).deleted
        except Exception:
            log.exception("gc %s failed; the next run resumes it", registry)
    return deleted
