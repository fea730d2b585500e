"""Attaching the scan's documents to the image as OCI referrers, through the data plane's own store: the
bytes go to Blob Storage content-addressed, the repository gets its blob links, and the artifact manifest
(`subject` = the scanned manifest, `artifactType` = the document's media type, an empty config) is
committed as any pushed manifest is, so `GET /v2/<name>/referrers/<digest>` and every OCI 1.1 client find
it, and it pulls like any artifact.

The scanner's own pushes raise no events: they are the scan's result, not a user's push (webhooks see
scans through quarantine). A newer document of the same kind replaces the older one: the older artifact
manifest is deleted once the new one is committed.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from services.platform.blobs import BlobStore
from services.platform.cosmos import ConcurrentUpdate, utcnow
from services.registry.collector import keep_blob, still_pinned
from services.registry.ledger import BlobLedger, fence_write, released
from services.registry.manifest import EMPTY_JSON_DIGEST, OCI_EMPTY_JSON, OCI_MANIFEST, parse_manifest
from services.registry.manifest_facts import image_size
from services.registry.store import ArtifactStore, BlobLinkDoc, ManifestDoc, blob_id

EMPTY_JSON = b"{}"
TITLE = "org.opencontainers.image.title"
CREATED = "org.opencontainers.image.created"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class ReferrerWriter:
    def __init__(self, artifacts: ArtifactStore, blobs: BlobStore, inline_limit: int, ledger: BlobLedger) -> None:
        self._artifacts = artifacts
        self._blobs = blobs
        self._ledger = ledger
        self._inline_limit = inline_limit

    async def _store_blob(self, registry: str, repo: str, data: bytes) -> str:
        """Store, link and pin the bytes against the garbage collector, as an upload does
        (services/registry/collector.py)."""
        digest = _digest(data)
        wrote = await self._blobs.size(registry, digest) is None
        if wrote:
            await self._blobs.put(registry, digest, data)

        async def link() -> None:
            doc = BlobLinkDoc(id=blob_id(digest), repo=repo, digest=digest, size=len(data))
            await self._artifacts.put_blob_link(doc)

        async def rewrite() -> None:
            await self._blobs.put(registry, digest, data)

        await keep_blob(self._ledger, registry, digest, len(data), link=link, rewrite=rewrite, wrote=wrote)
        return digest

    async def attach(
        self,
        registry: str,
        repo: str,
        subject: ManifestDoc,
        media_type: str,
        data: bytes,
        title: str,
        annotations: dict[str, str] | None = None,
    ) -> str:
        """Store `data` and commit an artifact manifest referring to `subject`; returns its digest."""
        layer = await self._store_blob(registry, repo, data)
        await self._store_blob(registry, repo, EMPTY_JSON)  # the empty config, sha256:44136fa...
        body: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": media_type,
            "config": {"mediaType": OCI_EMPTY_JSON, "digest": str(EMPTY_JSON_DIGEST), "size": len(EMPTY_JSON)},
            "layers": [{"mediaType": media_type, "digest": layer, "size": len(data), "annotations": {TITLE: title}}],
            "subject": {"mediaType": subject.mediaType, "digest": subject.digest, "size": subject.size},
            "annotations": {CREATED: utcnow(), **(annotations or {})},
        }
        content = json.dumps(body, separators=(",", ":")).encode()
        manifest = parse_manifest(content, OCI_MANIFEST)
        digest = str(manifest.digest)
        if await self._artifacts.get_manifest(repo, digest) is not None:
            return digest
        inline = len(content) <= self._inline_limit
        pinned = None

        async def store_content() -> None:
            await self._blobs.put(registry, digest, content)

        if not inline:
            await store_content()
            pinned = await keep_blob(
                self._ledger, registry, digest, len(content), link=None, rewrite=store_content, wrote=True
            )
        now = utcnow()
        doc = ManifestDoc(
            id=f"manifest:{digest}",
            repo=repo,
            digest=digest,
            mediaType=OCI_MANIFEST,
            size=len(content),
            artifactType=media_type,
            subject=subject.digest,
            referrer=manifest.referrer_descriptor(),
            configMediaType=OCI_EMPTY_JSON,
            blobs=[str(d.digest) for d in manifest.required_blobs],
            content=base64.b64encode(content).decode() if inline else None,
            created=now,
            updated=now,
            imageSize=image_size(manifest),
        )
        # The links were made just above, after the fence could have been read: read it now, and a link the
        # collector took since fails the commit (ConcurrentUpdate: the scan is retried).
        fence = await self._ledger.fence_epoch(repo)
        for blob in doc.blobs:
            if await self._artifacts.get_blob_link(repo, blob) is None:
                raise ConcurrentUpdate(f"blob {blob} was collected while the scan attached it")
        await self._artifacts.commit_manifest(doc, [], fence=fence_write(repo, fence))
        if pinned is not None:
            await still_pinned(self._ledger, pinned, store_content)
        return digest

    async def remove(self, repo: str, digest: str | None, keep: str | None) -> None:
        """Delete an older artifact manifest of ours (not `keep`); nothing when it is gone already."""
        if digest is None or digest == keep:
            return
        old = await self._artifacts.get_manifest(repo, digest)
        if old is not None and old.subject is not None:
            await self._artifacts.delete_manifest(old, [], release=released(repo.split("/", 1)[0], old))
