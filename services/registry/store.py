"""The data plane's documents and queries: repositories, and what one repository holds.

    repositories [/registry]  one document per repository, so the catalog is one ordered
                              single-partition query (never a walk of storage)
        {id: <name with "/" as "|">, registry, type: "repository", name, created}
    artifacts    [/repo]      everything of one repository, partition "<registry>/<name>":
        manifest:<digest>  {type: "manifest", digest, mediaType, size, artifactType, subject,
                            referrer (the descriptor it adds to its subject's referrers index),
                            configMediaType, blobs, children, content (base64, when small), created}
        tag:<tag>          {type: "tag", name, digest, mediaType, size, updated}
                           carries what HEAD needs, so HEAD by tag is exactly one point read
        blob:<digest>      {type: "blob", digest, size, created}
                           the repository's link to a registry-wide, content-addressed blob
        upload:<uuid>      {type: "upload", offset, blocks, hashState, ...} an upload session;
                           expires (ttl) when abandoned
        outbox:<uuid>      the events a change raised (services/events/store.py), in the change's batch

A manifest and its tags are written in one transactional batch of the repository's partition, so readers
never see a tag pointing at a manifest that is not there; the outbox document of the events the change
raises goes in the same batch, so an event is never lost nor raised for a change that did not happen.
Upload sessions are replaced with an ETag condition.
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any, Literal

from azure.core.exceptions import ResourceNotFoundError
from pydantic import Field

from services.events.store import OutboxDoc
from services.platform.cosmos import BatchOperation, ConcurrentUpdate, Cosmos, Document, utcnow

UPLOAD_TTL_SECONDS = 7 * 24 * 3600  # Blob Storage drops uncommitted blocks after 7 days, too.
KNOWN_REPOSITORY_SECONDS = 60.0


class RepositoryDoc(Document):
    registry: str
    type: Literal["repository"] = "repository"
    name: str
    created: str = Field(default_factory=utcnow)


class ManifestDoc(Document):
    repo: str
    type: Literal["manifest"] = "manifest"
    digest: str
    mediaType: str
    size: int
    artifactType: str | None = None
    subject: str | None = None
    referrer: dict[str, Any] | None = None
    configMediaType: str | None = None
    chartName: str | None = None  # a Helm chart's name and version (from its config), for chart events
    chartVersion: str | None = None
    blobs: list[str] = Field(default_factory=list)
    children: list[str] = Field(default_factory=list)
    content: str | None = None  # base64 of the manifest bytes when small enough to keep inline
    created: str = Field(default_factory=utcnow)

    def inline_content(self) -> bytes | None:
        return base64.b64decode(self.content) if self.content is not None else None


class TagDoc(Document):
    repo: str
    type: Literal["tag"] = "tag"
    name: str
    digest: str
    mediaType: str
    size: int
    updated: str = Field(default_factory=utcnow)


class BlobLinkDoc(Document):
    repo: str
    type: Literal["blob"] = "blob"
    digest: str
    size: int
    created: str = Field(default_factory=utcnow)


class UploadDoc(Document):
    repo: str
    type: Literal["upload"] = "upload"
    uploadId: str
    offset: int = 0
    blocks: list[str] = Field(default_factory=list)
    hashState: str | None = None  # base64 of the resumable hasher's state
    created: str = Field(default_factory=utcnow)
    ttl: int = UPLOAD_TTL_SECONDS


def repo_key(registry: str, name: str) -> str:
    return f"{registry}/{name}"


def manifest_id(digest: str) -> str:
    return f"manifest:{digest}"


def tag_id(tag: str) -> str:
    return f"tag:{tag}"


def blob_id(digest: str) -> str:
    return f"blob:{digest}"


def upload_id(uuid: str) -> str:
    return f"upload:{uuid}"


def repository_id(name: str) -> str:
    # Cosmos ids may not contain "/"; "|" never occurs in a repository name, so this is reversible.
    return name.replace("/", "|")


class ArtifactStore:
    """Repositories and their manifests, tags, blob links and upload sessions; every hot path is a point read
    or a one-partition query."""

    def __init__(self, cosmos: Cosmos) -> None:
        self._cosmos = cosmos
        self._known_repositories: dict[tuple[str, str], float] = {}

    async def ensure_repository(self, registry: str, name: str) -> None:
        """Create the repository document if missing. Every push calls this, so remember for a while what
        exists (a repository deleted through another instance is re-created by the next push after that)."""
        now = time.monotonic()
        if self._known_repositories.get((registry, name), 0.0) > now:
            return
        doc = RepositoryDoc(id=repository_id(name), registry=registry, name=name)
        await self._cosmos.create("repositories", doc)  # None when it exists: fine
        self._known_repositories[(registry, name)] = now + KNOWN_REPOSITORY_SECONDS

    async def repository_exists(self, registry: str, name: str) -> bool:
        return await self._cosmos.read("repositories", repository_id(name), registry) is not None

    async def list_repositories(self, registry: str, last: str, limit: int) -> list[str]:
        """Up to `limit` repository names after `last`, in lexical order."""
        sql = (
            "SELECT c.name FROM c WHERE c.registry = @r AND c.type = 'repository' AND c.name > @last "
            "ORDER BY c.name"
        )
        return await self._first_names(
            self._cosmos.query("repositories", sql, {"@r": registry, "@last": last}, registry, limit), limit
        )

    async def all_repositories(self, registry: str) -> list[str]:
        sql = "SELECT c.name FROM c WHERE c.registry = @r AND c.type = 'repository'"
        return [item["name"] async for item in self._cosmos.query("repositories", sql, {"@r": registry}, registry)]

    async def delete_repository(self, registry: str, name: str) -> None:
        self._known_repositories.pop((registry, name), None)
        repo = repo_key(registry, name)
        sql = "SELECT c.id FROM c WHERE c.repo = @p"
        async for doc in self._cosmos.query("artifacts", sql, {"@p": repo}, repo):
            await self._cosmos.delete("artifacts", doc["id"], repo)
        await self._cosmos.delete("repositories", repository_id(name), registry)

    @staticmethod
    async def _first_names(items: AsyncIterator[dict[str, Any]], limit: int) -> list[str]:
        names: list[str] = []
        async for item in items:
            names.append(item["name"])
            if len(names) >= limit:
                break
        return names

    async def get_blob_link(self, repo: str, digest: str) -> BlobLinkDoc | None:
        doc = await self._cosmos.read("artifacts", blob_id(digest), repo)
        return BlobLinkDoc.model_validate(doc) if doc else None

    async def put_blob_link(self, link: BlobLinkDoc) -> None:
        await self._cosmos.upsert("artifacts", link)

    async def delete_blob_link(self, repo: str, digest: str) -> bool:
        return await self._cosmos.delete("artifacts", blob_id(digest), repo)

    async def create_upload(self, upload: UploadDoc) -> UploadDoc:
        doc = await self._cosmos.create("artifacts", upload)
        if doc is None:
            raise ConcurrentUpdate(upload.id)  # a random id taken twice: never in practice
        return UploadDoc.model_validate(doc)

    async def get_upload(self, repo: str, uuid: str) -> UploadDoc | None:
        doc = await self._cosmos.read("artifacts", upload_id(uuid), repo)
        return UploadDoc.model_validate(doc) if doc else None

    async def replace_upload(self, upload: UploadDoc) -> UploadDoc:
        """Write the session back only if nobody else did since it was read."""
        return UploadDoc.model_validate(await self._cosmos.replace("artifacts", upload))

    async def claim_upload(self, upload: UploadDoc) -> bool:
        """Delete the session only if it is still as read (ETag): True for exactly one of racing callers."""
        return await self._cosmos.delete("artifacts", upload.id, upload.repo, etag=upload.etag or "*")

    async def delete_upload(self, repo: str, uuid: str) -> bool:
        return await self._cosmos.delete("artifacts", upload_id(uuid), repo)

    async def get_manifest(self, repo: str, digest: str) -> ManifestDoc | None:
        doc = await self._cosmos.read("artifacts", manifest_id(digest), repo)
        return ManifestDoc.model_validate(doc) if doc else None

    async def get_tag(self, repo: str, tag: str) -> TagDoc | None:
        doc = await self._cosmos.read("artifacts", tag_id(tag), repo)
        return TagDoc.model_validate(doc) if doc else None

    async def commit_manifest(
        self, manifest: ManifestDoc, tags: Iterable[TagDoc], outbox: OutboxDoc | None = None
    ) -> None:
        """The manifest, its tags and the outbox of its events, all or nothing, in one transactional batch."""
        operations: list[BatchOperation] = [("upsert", (manifest.to_item(),))]
        operations += [("upsert", (tag.to_item(),)) for tag in tags]
        if outbox is not None:
            operations.append(("create", (outbox.to_item(),)))
        await self._cosmos.batch("artifacts", manifest.repo, operations)

    async def delete_tag(self, repo: str, tag: str, outbox: OutboxDoc | None = None) -> bool:
        """Delete a tag (with the outbox of its events in the same batch, when given)."""
        if outbox is None:
            return await self._cosmos.delete("artifacts", tag_id(tag), repo)
        try:
            await self._cosmos.batch("artifacts", repo, [("delete", (tag_id(tag),)), ("create", (outbox.to_item(),))])
        except ResourceNotFoundError:
            return False
        return True

    async def delete_manifest(self, repo: str, digest: str, outbox: OutboxDoc | None = None) -> bool:
        """Delete a manifest and every tag that points at it (and write the outbox of its events), in one
        batch."""
        tags = [
            item["id"]
            async for item in self._cosmos.query(
                "artifacts",
                "SELECT c.id FROM c WHERE c.repo = @p AND c.type = 'tag' AND c.digest = @d",
                {"@p": repo, "@d": digest},
                repo,
            )
        ]
        operations: list[BatchOperation] = [("delete", (manifest_id(digest),))]
        operations += [("delete", (tag,)) for tag in tags]
        if outbox is not None:
            operations.append(("create", (outbox.to_item(),)))
        try:
            await self._cosmos.batch("artifacts", repo, operations)
        except ResourceNotFoundError:
            return False
        return True

    async def list_tags(self, repo: str, last: str, limit: int) -> list[str]:
        sql = "SELECT c.name FROM c WHERE c.repo = @p AND c.type = 'tag' AND c.name > @last ORDER BY c.name"
        return await self._first_names(
            self._cosmos.query("artifacts", sql, {"@p": repo, "@last": last}, repo, limit), limit
        )

    async def list_referrers(self, repo: str, subject: str) -> list[dict[str, Any]]:
        sql = "SELECT c.referrer FROM c WHERE c.repo = @p AND c.type = 'manifest' AND c.subject = @s"
        return [
            item["referrer"]
            async for item in self._cosmos.query("artifacts", sql, {"@p": repo, "@s": subject}, repo)
            if item.get("referrer")
        ]
