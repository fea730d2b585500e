"""ACR's soft delete policy (`policies.softDeletePolicy`: `status`, `retentionDays` 1-90, default 7).

While it is enabled, a delete keeps what it deletes as a soft-deleted record (services/registry/
deleted_store.py), in the same batch as the delete and its events (services/registry/changes.py):

    delete manifest (by digest)   the manifest and the tags that pointed at it    `delete` (as ever)
    untag (delete by tag)         the tag (the manifest stays live)               `untag` (as ever)
    delete repository             every manifest and its tags; the repository's blob links stay

Soft-deleted records are invisible to `/v2/` (404 MANIFEST_UNKNOWN, not in tag lists, a deleted
repository not in the catalog) and listed by `/acr/v1/_deleted/...` (routes/acr_deleted.py). A restore
brings the manifest (and the tag asked for, or every tag it had) back in one batch and raises `push`, as a
push of it would (`quarantine` while the quarantine policy still holds the image); a tag that now points at
another manifest is a conflict (409) unless forced, and a forced restore soft-deletes the tag it overwrites,
as ACR's doc says. A referrer is restored only after its subject (ACR's rule); an index is restored without
its children (ACR's too).

The blobs of a soft-deleted manifest stay: its record lists them and the garbage collector counts a
record's blobs as referenced (services/registry/ledger.py `referenced_among`), so no `release` is written
until the record is purged. The purge (`purge_expired`, a timer) deletes records older than the policy's
*current* `retentionDays` (also after the policy is disabled, as ACR's CLI warns), each manifest record with
the `release` of its blobs and its `delete` event in one batch: exactly what a hard delete writes.

The digest of a soft-deleted manifest may be pushed again (ACR refuses that push; here it would cost every
push a read): the record stays listed, and restoring it then only brings back its tags.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from services.events.actions import delete_events, push_events
from services.events.models import EventRequest
from services.events.outbox import outbox_for
from services.events.store import OutboxDoc
from services.management.store import RegistryDoc
from services.platform.cosmos import BatchOperation, ConcurrentUpdate, Cosmos, utcnow
from services.registry import locks
from services.registry.audit import lifecycle_deletion
from services.registry.changes import ATTEMPTS, DEFAULT_SOFT_DELETE_DAYS, contended, facts_of
from services.registry.deleted_store import (
    DeletedManifestDoc,
    DeletedStore,
    DeletedTagDoc,
    delete_as_read,
    deleted_tag_id,
    outbox_operation,
    upsert,
)
from services.registry.errors import ErrorCode, RegistryError
from services.registry.ledger import released
from services.registry.locks import ChangeableAttributes
from services.registry.store import BATCH_LIMIT, ArtifactStore, TagDoc, repo_key
from services.scanning.quarantine import held, quarantine_enabled, quarantine_events

log = logging.getLogger("registry.softdelete")

MAX_RESTORED_TAGS = 30  # tags one restore brings back (each is two operations of its one batch)
PURGE_PAGE = 200
PURGE_JOB = "soft-delete-purge"  # the events' user agent, and the audit records' identity (system:...)


def purge_days(registry: RegistryDoc) -> int:
    """How long records are kept: the policy's current days, whether or not it is still enabled."""
    policy = registry.policies.get("softDeletePolicy") or {}
    return int(policy.get("retentionDays", DEFAULT_SOFT_DELETE_DAYS))


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- restore ------------------------------------------------------------------------------------------------
@dataclass
class Restored:
    digest: str
    tags: list[str]


def _conflict(tag: str, current: str) -> RegistryError:
    return RegistryError(
        ErrorCode.DENIED,
        f"tag {tag!r} now points at {current}; restore with force=true to move it (the tag it replaces is "
        "soft-deleted)",
        status=409,
        detail={"tag": tag, "digest": current},
    )


async def restore(
    artifacts: ArtifactStore,
    deleted: DeletedStore,
    registry_doc: RegistryDoc,
    name: str,
    digest: str,
    tag: str | None,
    force: bool,
    request: EventRequest,
    repository_attributes: ChangeableAttributes,
) -> tuple[Restored, OutboxDoc | None]:
    """Bring a soft-deleted manifest back with `tag` (or every tag it had), raising `push` (`quarantine` for
    an image still held by the quarantine policy, as its push would)."""
    registry = registry_doc.registry
    repo = repo_key(registry, name)
    for _ in range(ATTEMPTS):
        record = await deleted.manifest(repo, digest)
        live = await artifacts.get_manifest(repo, digest)
        tag_records = {r.tag: r for r in (await deleted.tags_named(repo, tag) if tag else []) if r.digest == digest}
        if record is None and live is None:
            raise RegistryError(
                ErrorCode.MANIFEST_UNKNOWN, "no soft-deleted manifest has this digest", detail={"digest": digest}
            )
        if tag is not None:
            if tag not in tag_records and (record is None or tag not in record.tags):
                raise RegistryError(
                    ErrorCode.TAG_UNKNOWN,
                    f"tag {tag!r} was not deleted from {digest}",
                    detail={"tag": tag, "digest": digest},
                )
            names = [tag]
        else:
            names = list(record.tags) if record is not None else []
            for other in await deleted.deleted_tags(repo):
                if other.digest == digest and other.tag not in names:
                    names.append(other.tag)
                    tag_records[other.tag] = other
        if len(names) > MAX_RESTORED_TAGS:
            raise RegistryError(
                ErrorCode.UNSUPPORTED,
                f"the manifest had {len(names)} tags; restore at most {MAX_RESTORED_TAGS} at once by naming a tag",
                status=400,
            )
        manifest = live if live is not None else record.restored() if record is not None else None
        assert manifest is not None
        subject = manifest.subject if live is None else None
        if subject is not None and await artifacts.get_manifest(repo, subject) is None:
            raise RegistryError(
                ErrorCode.DENIED,
                f"restore its subject {subject} first (a referrer is restored after its subject)",
                status=409,
                detail={"subject": subject},
            )
        if live is None:
            await _check_links(artifacts, repo, manifest.blobs)
        now = utcnow()
        operations: list[BatchOperation] = []
        if live is None:
            manifest.updated, manifest.untaggedSince = now, None
            operations.append(("create", (manifest.to_item(),)))
        current_tags: list[tuple[str, ChangeableAttributes | None]] = []
        for tag_name in names:
            current = await artifacts.get_tag(repo, tag_name)
            current_tags.append((tag_name, current.changeableAttributes if current is not None else None))
            if current is not None and current.digest == digest:
                continue
            if current is not None and not force:
                raise _conflict(tag_name, current.digest)
            target = {"digest": digest, "mediaType": manifest.mediaType, "size": manifest.size, "updated": now}
            if current is None:
                made = TagDoc.model_validate(
                    target | {"id": f"tag:{tag_name}", "repo": repo, "name": tag_name, "created": now}
                )
                operations.append(("create", (made.to_item(),)))
            else:
                moved = current.model_copy(update=target)
                operations.append(("replace", (current.id, moved.to_item()), {"if_match_etag": current.etag}))
                operations.append(upsert(DeletedTagDoc.of(current, now)))
        locks.check_push(
            name,
            repository_attributes,
            digest,
            live.changeableAttributes if live is not None else None,
            current_tags,
        )
        if record is not None:
            operations.append(delete_as_read(record))
            for left in sorted(set(record.tags) - set(names)):  # still restorable later, each on its own
                kept: dict[str, str | int] = {
                    "repo": repo,
                    "tag": left,
                    "digest": digest,
                    "mediaType": manifest.mediaType,
                }
                kept |= {"id": deleted_tag_id(left, digest), "size": manifest.size, "deletedAt": record.deletedAt}
                operations.append(upsert(DeletedTagDoc.model_validate(kept)))
        operations.extend(delete_as_read(r) for r in tag_records.values() if r.tag in names)
        is_held = quarantine_enabled(registry_doc) and held(manifest.quarantineState)
        events = quarantine_events(push_events(facts_of(name, manifest), names, request), is_held)
        outbox = outbox_for(registry, repo, events)
        operations.extend(outbox_operation(outbox))
        if not operations or operations == outbox_operation(outbox):
            return Restored(digest, names), None  # nothing was deleted: nothing to bring back
        if len(operations) > BATCH_LIMIT:
            raise RegistryError(
                ErrorCode.UNSUPPORTED,
                f"the manifest had {len(record.tags) if record else 0} tags: too many to restore in one request",
                status=400,
            )
        await artifacts.ensure_repository(registry, name)
        try:
            await deleted.commit(repo, operations)
        except ConcurrentUpdate:
            continue
        return Restored(digest, names), outbox
    raise contended(f"manifest {digest}")


async def _check_links(artifacts: ArtifactStore, repo: str, blobs: list[str]) -> None:
    """The blobs the manifest needs must still be linked in its repository (a soft delete keeps the links,
    but `DELETE /v2/<name>/blobs/<digest>` may have removed one since): else the client uploads them again
    first, as it would for a push (`MANIFEST_BLOB_UNKNOWN`)."""
    missing = [digest for digest in dict.fromkeys(blobs) if await artifacts.get_blob_link(repo, digest) is None]
    if missing:
        raise RegistryError(
            ErrorCode.MANIFEST_BLOB_UNKNOWN,
            f"{len(missing)} blob(s) of the manifest were deleted from the repository since; push them again, "
            "then restore",
            detail={"digests": missing},
        )


# --- purge --------------------------------------------------------------------------------------------------
@dataclass
class PurgeReport:
    registry: str
    manifests: list[str] = field(default_factory=list)  # "<repository>@<digest>"
    tags: int = 0


async def purge_expired(metadata: Cosmos, registry: RegistryDoc, now: datetime | None = None) -> PurgeReport:
    """Delete the soft-deleted records older than the policy's days: a manifest's with the release of its
    blobs (the collector then decides, as after a hard delete) and its `delete` event, in one batch."""
    report = PurgeReport(registry.registry)
    moment = now or datetime.now(UTC)
    cutoff = _stamp(moment - timedelta(days=purge_days(registry)))
    deleted, artifacts = DeletedStore(metadata), ArtifactStore(metadata)
    request = EventRequest(id=str(uuid.uuid4()), host="", method="DELETE", useragent=PURGE_JOB)
    prefix = f"{registry.registry}/"
    while True:
        items = await deleted.expired(registry.registry, cutoff, PURGE_PAGE)
        done = 0
        for item in items:
            repo = str(item["repo"])
            if item["type"] == "deletedTag":
                tag = DeletedTagDoc.model_validate(item)
                try:
                    await deleted.commit(repo, [delete_as_read(tag)])
                except ConcurrentUpdate:
                    continue  # restored or deleted again meanwhile
                report.tags += 1
                done += 1
                continue
            record = DeletedManifestDoc.model_validate(item)
            manifest = record.restored()
            live = await artifacts.get_manifest(repo, record.digest)
            events = delete_events(facts_of(repo[len(prefix) :], manifest), request) if live is None else []
            outbox = outbox_for(registry.registry, repo, events)
            operations = [delete_as_read(record), ("create", (released(registry.registry, manifest).to_item(),))]
            try:
                await deleted.commit(repo, [*operations, *outbox_operation(outbox)])
            except ConcurrentUpdate:
                continue
            report.manifests.append(f"{repo[len(prefix) :]}@{record.digest}")
            lifecycle_deletion(
                PURGE_JOB, registry.loginServer, repo[len(prefix) :], record.digest, manifest.mediaType, manifest.size
            )
            report.tags += len(record.tags)
            done += 1
        if len(items) < PURGE_PAGE or done == 0:
            break
    if report.manifests or report.tags:
        log.info(
            "soft-delete purge %s: %d manifest(s), %d tag(s)", registry.registry, len(report.manifests), report.tags
        )
    return report
