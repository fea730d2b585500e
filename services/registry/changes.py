"""Deletes that both `/v2/` and `/acr/v1/` make, each checked against the locks (services/registry/locks.py)
and committed with the outbox of the events it raises, exactly as the `/v2/` delete always did:

    untag             one tag (the manifest stays)            our `untag` event
    delete manifest   a manifest and every tag pointing at it  ACR's `delete` (and `chart_delete`)
    delete repository every manifest and tag, its blob links   one `delete` per manifest
                      and upload sessions, its document

Each reads what it deletes, checks the locks on what it read, and deletes it only if unchanged since
(ETag): a lock set or a tag moved in between makes the delete fail with `ConcurrentUpdate`, and it looks
again, up to `ATTEMPTS` times, then answers 503 with `Retry-After`.

With the registry's soft delete policy enabled (services/registry/softdelete.py), the manifest and tag
deletes keep what they delete as soft-deleted records, in the same batch (`soft_delete_manifest`,
`soft_untag`); a soft-deleted manifest's blobs are not released, and a repository delete keeps its blob
links, so the manifests can be restored.

A blob delete in a repository is guarded too (`guard_blob_delete`): a locked repository, or a locked
manifest or tag whose image needs the blob, keeps it.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import Response

from services.events.actions import (
    Chart,
    ManifestFacts,
    delete_events,
    request_info,
    untag_events,
)
from services.events.outbox import outbox_for
from services.events.store import OutboxDoc
from services.management.store import RegistryDoc
from services.platform.cosmos import BatchOperation, ConcurrentUpdate, utcnow
from services.registry import locks
from services.registry.app import Call, Handler
from services.registry.deleted_store import DeletedManifestDoc, DeletedStore, DeletedTagDoc, delete_as_read, upsert
from services.registry.digest import Digest
from services.registry.errors import ErrorCode, RegistryError
from services.registry.ledger import release_of, released
from services.registry.locks import ChangeableAttributes
from services.registry.store import BATCH_LIMIT, ManifestDoc, TagDoc, repo_key

ATTEMPTS = 5
DEFAULT_SOFT_DELETE_DAYS = 7


def soft_delete_on(registry: RegistryDoc) -> bool:
    """Whether deletes are soft now (ACR's `softDeletePolicy` enabled)."""
    return (registry.policies.get("softDeletePolicy") or {}).get("status") == "enabled"


def _outbox(outbox: OutboxDoc | None) -> list[BatchOperation]:
    return [("create", (outbox.to_item(),))] if outbox is not None else []


async def soft_delete_manifest(
    deleted: DeletedStore, doc: ManifestDoc, tags: list[TagDoc], outbox: OutboxDoc | None
) -> bool:
    """Delete the manifest and its tags (each only as read) and keep them as one record, with the outbox of
    the delete's events, in one batch (tags beyond what fits go first, in batches of their own; the record
    names them all, and those of an earlier record of the same digest). `ConcurrentUpdate` when anything
    changed or went since read (the caller reads again, and finds it gone)."""
    previous = await deleted.manifest(doc.repo, doc.digest)
    names = [tag.name for tag in tags] + (previous.tags if previous is not None else [])
    record = DeletedManifestDoc.of(doc, names, utcnow())
    room = BATCH_LIMIT - 3
    for start in range(room, len(tags), BATCH_LIMIT):
        await deleted.commit(doc.repo, [delete_as_read(tag) for tag in tags[start : start + BATCH_LIMIT]])
    operations: list[BatchOperation] = [
        delete_as_read(doc),
        *(delete_as_read(tag) for tag in tags[:room]),
        upsert(record),
        *_outbox(outbox),
    ]
    await deleted.commit(doc.repo, operations)
    return True


async def soft_untag(deleted: DeletedStore, tag: TagDoc, outbox: OutboxDoc | None) -> None:
    """Delete the tag (only as read) and keep it as a record, with the outbox of its `untag` event."""
    await deleted.commit(tag.repo, [delete_as_read(tag), upsert(DeletedTagDoc.of(tag, utcnow())), *_outbox(outbox)])


def contended(what: str) -> RegistryError:
    """Every attempt lost a race against other writers: the client should simply try again."""
    return RegistryError(
        ErrorCode.UNAVAILABLE, f"{what} kept changing while this request ran; retry", headers={"Retry-After": "1"}
    )


def facts_of(name: str, doc: ManifestDoc) -> ManifestFacts:
    chart = Chart(doc.chartName, doc.chartVersion) if doc.chartName and doc.chartVersion else None
    return ManifestFacts(name, doc.digest, doc.mediaType, doc.size, chart)


async def current_attributes(call: Call) -> ChangeableAttributes:
    """The repository's attributes as they are now (not the read cache): for writes and deletes."""
    doc = await call.api.artifacts.get_repository(call.registry.registry, call.name)
    return doc.changeableAttributes if doc is not None else ChangeableAttributes()


async def untag(call: Call, tag: str, missing: Callable[[], RegistryError]) -> None:
    """Delete one tag; `missing()` is the error when there is no such tag (it differs by API)."""
    registry, repo = call.registry.registry, repo_key(call.registry.registry, call.name)
    store = call.api.artifacts
    for _ in range(ATTEMPTS):
        doc = await store.get_tag(repo, tag)
        if doc is None:
            raise missing()
        locks.check_untag(call.name, await current_attributes(call), tag, doc.changeableAttributes)
        facts = ManifestFacts(call.name, doc.digest, doc.mediaType, doc.size)
        outbox = outbox_for(registry, repo, untag_events(facts, tag, request_info(call.request.headers, "DELETE")))
        try:
            if soft_delete_on(call.registry):
                await soft_untag(DeletedStore(call.api.metadata), doc, outbox)
            elif not await store.delete_tag(repo, tag, outbox, etag=doc.etag):
                raise missing()
        except ConcurrentUpdate:
            continue
        await call.api.events.publish(outbox)
        return
    raise contended(f"tag {tag!r}")


async def delete_manifest(call: Call, digest: str, missing: Callable[[], RegistryError]) -> None:
    """Delete a manifest and its tags."""
    registry, repo = call.registry.registry, repo_key(call.registry.registry, call.name)
    store = call.api.artifacts
    for _ in range(ATTEMPTS):
        doc = await store.get_manifest(repo, digest)
        if doc is None:
            raise missing()
        tags = await store.tags_of(repo, digest)
        locks.check_manifest_delete(
            call.name,
            await current_attributes(call),
            digest,
            doc.changeableAttributes,
            [(tag.name, tag.changeableAttributes) for tag in tags],
        )
        events = delete_events(facts_of(call.name, doc), request_info(call.request.headers, "DELETE"))
        outbox = outbox_for(registry, repo, events)
        try:
            if soft_delete_on(call.registry):
                if not await soft_delete_manifest(DeletedStore(call.api.metadata), doc, tags, outbox):
                    raise missing()
            elif not await store.delete_manifest(doc, tags, outbox, released(registry, doc)):
                raise missing()
        except ConcurrentUpdate:
            continue
        await call.api.events.publish(outbox)
        return
    raise contended(f"manifest {digest}")


async def delete_repository(call: Call) -> tuple[list[str], list[str]]:
    """Delete a repository and everything in it; (digests, tags) deleted. Refused as a whole, before
    anything is deleted, when anything in it is locked; `404 NAME_UNKNOWN` when there is no such
    repository."""
    registry, repo = call.registry.registry, repo_key(call.registry.registry, call.name)
    store = call.api.artifacts
    deleted_manifests: list[str] = []
    deleted_tags: list[str] = []
    request = request_info(call.request.headers, "DELETE")
    soft = soft_delete_on(call.registry)
    deleted = DeletedStore(call.api.metadata)
    for _ in range(ATTEMPTS):
        repository = await store.get_repository(registry, call.name)
        manifests = [ManifestDoc.model_validate(item) for item in await store.all_of(repo, "manifest")]
        tags = [TagDoc.model_validate(item) for item in await store.all_of(repo, "tag")]
        if repository is None and not manifests and not tags:
            if deleted_manifests or deleted_tags:
                break  # an earlier attempt got this far; the rest went meanwhile
            raise RegistryError(ErrorCode.NAME_UNKNOWN, detail={"name": call.name})
        locks.check_repository_delete(
            call.name,
            repository.changeableAttributes if repository is not None else ChangeableAttributes(),
            [(doc.digest, doc.changeableAttributes) for doc in manifests],
            [(tag.name, tag.changeableAttributes) for tag in tags],
        )
        by_digest: dict[str, list[TagDoc]] = {}
        for tag in tags:
            by_digest.setdefault(tag.digest, []).append(tag)
        try:
            for doc in manifests:
                own = by_digest.pop(doc.digest, [])
                outbox = outbox_for(registry, repo, delete_events(facts_of(call.name, doc), request))
                if (
                    await soft_delete_manifest(deleted, doc, own, outbox)
                    if soft
                    else await store.delete_manifest(doc, own, outbox, released(registry, doc))
                ):
                    deleted_manifests.append(doc.digest)
                    deleted_tags.extend(tag.name for tag in own)
                    await call.api.events.publish(outbox)
            for tag in (tag for orphans in by_digest.values() for tag in orphans):
                # A tag whose manifest is gone cannot exist (they are written and deleted together); this
                # only tidies up after a failure outside the batch, and raises no event.
                if await store.delete_tag(repo, tag.name, etag=tag.etag):
                    deleted_tags.append(tag.name)
        except ConcurrentUpdate:
            continue  # something changed: look again (what was deleted stays deleted)
        break
    else:
        raise contended(f"repository {call.name!r}")
    await store.delete_repository_rest(
        registry, call.name, lambda digests: release_of(registry, repo, digests), keep_links=soft
    )
    return deleted_manifests, deleted_tags


def guard_blob_delete(handler: Handler) -> Handler:
    """`DELETE /v2/<name>/blobs/<digest>` behind the locks: the blob link stays while the repository is
    write-locked or a locked manifest (or a locked tag's manifest) lists the blob."""

    async def guarded(call: Call) -> Response:
        try:
            digest = str(Digest.parse(call.reference))
        except RegistryError:
            return await handler(call)  # the handler reports the malformed digest
        holder = await call.api.artifacts.locked_holders_of_blob(repo_key(call.registry.registry, call.name), digest)
        locks.check_blob_delete(call.name, digest, await current_attributes(call), holder)
        return await handler(call)

    return guarded
