"""The soft-deleted manifests and tags of a repository (services/registry/softdelete.py has the rules).

    artifacts [/repo]  in the repository's partition, next to what is live:
        deletedManifest:<digest>  {type: "deletedManifest", digest, blobs, content (as the manifest had
                                  them), deletedAt, tags (the names that pointed at it), manifest (every
                                  other field of the manifest document, to restore it from)}
                                  written in the batch that deletes the manifest and its tags, instead of
                                  the `release` of its blobs: the collector counts `blobs` (and the
                                  manifest's own bytes when `content` is missing) as referenced, exactly as
                                  a live manifest's (services/registry/ledger.py `referenced_among`), so
                                  nothing it needs is collected until it is purged
        deletedTag:<tag>@<digest> {type: "deletedTag", tag, digest, mediaType, size, deletedAt} a tag
                                  deleted alone (untag) while its manifest stayed, or overwritten by a
                                  forced restore

Neither type is seen by `/v2/` or the live `/acr/v1/` lists: those read `manifest` and `tag` documents only.
One record per digest (and per tag and digest): deleting the same thing again refreshes `deletedAt`.
"""

from __future__ import annotations

from typing import Any, Literal

from azure.core.exceptions import ResourceNotFoundError
from pydantic import Field

from services.events.store import OutboxDoc
from services.platform.cosmos import BatchOperation, ConcurrentUpdate, Cosmos, Document, utcnow
from services.platform.readcache import process_marks
from services.registry.store import ManifestDoc, TagDoc

# The manifest fields a deleted record keeps at its top level (what the collector reads), not in `manifest`.
_TOP_LEVEL = ("id", "_etag", "type", "repo", "digest", "blobs", "content", "timeKey")


class DeletedManifestDoc(Document):
    repo: str
    type: Literal["deletedManifest"] = "deletedManifest"
    digest: str
    blobs: list[str] = Field(default_factory=list)
    content: str | None = None
    deletedAt: str = Field(default_factory=utcnow)
    tags: list[str] = Field(default_factory=list)
    manifest: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, doc: ManifestDoc, tags: list[str], deleted_at: str) -> DeletedManifestDoc:
        rest = {key: value for key, value in doc.to_item().items() if key not in _TOP_LEVEL}
        return cls(
            id=deleted_manifest_id(doc.digest),
            repo=doc.repo,
            digest=doc.digest,
            blobs=list(doc.blobs),
            content=doc.content,
            deletedAt=deleted_at,
            tags=sorted(set(tags)),
            manifest=rest,
        )

    def restored(self) -> ManifestDoc:
        """The manifest document as it was (a new document: no ETag)."""
        values = {**self.manifest, "repo": self.repo, "digest": self.digest, "blobs": self.blobs}
        if self.content is not None:
            values["content"] = self.content
        return ManifestDoc.model_validate(values | {"id": f"manifest:{self.digest}"})


class DeletedTagDoc(Document):
    repo: str
    type: Literal["deletedTag"] = "deletedTag"
    tag: str
    digest: str
    mediaType: str
    size: int
    deletedAt: str = Field(default_factory=utcnow)

    @classmethod
    def of(cls, doc: TagDoc, deleted_at: str) -> DeletedTagDoc:
        return cls(
            id=deleted_tag_id(doc.name, doc.digest),
            repo=doc.repo,
            tag=doc.name,
            digest=doc.digest,
            mediaType=doc.mediaType,
            size=doc.size,
            deletedAt=deleted_at,
        )


def deleted_manifest_id(digest: str) -> str:
    return f"deletedManifest:{digest}"


def deleted_tag_id(tag: str, digest: str) -> str:
    return f"deletedTag:{tag}@{digest}"


def upsert(doc: Document) -> BatchOperation:
    return ("upsert", (doc.to_item(),))


def delete_as_read(doc: Document) -> BatchOperation:
    return ("delete", (doc.id,), {"if_match_etag": doc.etag} if doc.etag else {})


class DeletedStore:
    """Reads of the soft-deleted records, and the batches that move documents between live and deleted."""

    def __init__(self, cosmos: Cosmos) -> None:
        self._cosmos = cosmos

    async def manifest(self, repo: str, digest: str) -> DeletedManifestDoc | None:
        found = await self._cosmos.read("artifacts", deleted_manifest_id(digest), repo)
        return DeletedManifestDoc.model_validate(found) if found else None

    async def tags_named(self, repo: str, tag: str) -> list[DeletedTagDoc]:
        sql = "SELECT * FROM c WHERE c.repo = @p AND c.type = 'deletedTag' AND c.tag = @t"
        return [
            DeletedTagDoc.model_validate(item)
            async for item in self._cosmos.query("artifacts", sql, {"@p": repo, "@t": tag}, repo)
        ]

    async def manifests(self, repo: str, after: str = "", limit: int | None = None) -> list[DeletedManifestDoc]:
        """The soft-deleted manifests of the repository with digests after `after`, in digest order, at most
        `limit` (all without), without their inline bytes."""
        sql = "SELECT * FROM c WHERE c.repo = @p AND c.type = 'deletedManifest' AND c.digest > @after ORDER BY c.digest"
        found: list[DeletedManifestDoc] = []
        async for item in self._cosmos.query("artifacts", sql, {"@p": repo, "@after": after}, repo, limit):
            found.append(DeletedManifestDoc.model_validate(item | {"content": None}))
            if limit is not None and len(found) >= limit:
                break
        return found

    async def deleted_tags(self, repo: str) -> list[DeletedTagDoc]:
        sql = "SELECT * FROM c WHERE c.repo = @p AND c.type = 'deletedTag'"
        items = self._cosmos.query("artifacts", sql, {"@p": repo}, repo)
        return [DeletedTagDoc.model_validate(item) async for item in items]

    async def repositories(self, registry: str) -> list[str]:
        """The repositories of the registry that hold soft-deleted manifests or tags (cross-partition)."""
        # No DISTINCT: the emulator cannot run it across partitions; one short row per record instead.
        sql = (
            "SELECT VALUE c.repo FROM c WHERE (c.type = 'deletedManifest' OR c.type = 'deletedTag') "
            "AND STARTSWITH(c.repo, @p)"
        )
        prefix = f"{registry}/"
        found = {str(repo) async for repo in self._cosmos.query_across("artifacts", sql, {"@p": prefix})}
        return sorted(repo[len(prefix) :] for repo in found)

    async def expired(self, registry: str, cutoff: str, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` soft-deleted records of the registry deleted at `cutoff` or before (cross-partition:
        the purge timer only)."""
        sql = (
            "SELECT * FROM c WHERE (c.type = 'deletedManifest' OR c.type = 'deletedTag') "
            "AND STARTSWITH(c.repo, @p) AND c.deletedAt <= @cutoff"
        )
        found: list[dict[str, Any]] = []
        params = {"@p": f"{registry}/", "@cutoff": cutoff}
        async for item in self._cosmos.query_across("artifacts", sql, params, limit):
            found.append(item)
            if len(found) >= limit:
                break
        return found

    async def commit(self, repo: str, operations: list[BatchOperation]) -> None:
        """One transactional batch in the repository's partition; `ConcurrentUpdate` when anything in it
        changed or went since read."""
        try:
            await self._cosmos.batch("artifacts", repo, operations)
        except ResourceNotFoundError as exc:
            raise ConcurrentUpdate(str(exc)) from exc
        finally:
            process_marks().changed(repo)  # what this instance cached of the repository is read again


def outbox_operation(outbox: OutboxDoc | None) -> list[BatchOperation]:
    return [("create", (outbox.to_item(),))] if outbox is not None else []
