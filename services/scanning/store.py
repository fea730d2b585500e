"""The scanner's documents: one scan state per scanned manifest, next to the manifest.

    artifacts [/repo]  partition "<registry>/<repository>" (services/registry/store.py)
        scan:<digest>  {type: "scan", digest, state (queued | scanning | done | failed), reason, counts
                        {critical, high, medium, low, unknown}, worst {id, severity, package, version},
                        packages, sbomDigest, reportDigest (the referrers attached), advisoryDb (the
                        database version the report was matched against), fingerprint (of the findings),
                        leaseUntil (a scan in progress), requested (a rescan asked for), updated, children
                        (an index: the scan state of each image it lists)}

A scan is claimed by writing `scanning` with a lease under the document's ETag, so a redelivered event or
two instances never scan one image twice at once; a lease that ran out (the instance died) may be taken
over. The re-match timer finds what to re-match with one cross-partition query on `advisoryDb`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Literal

from pydantic import Field

from services.platform.cosmos import Cosmos, Document, utcnow

ScanState = Literal["queued", "scanning", "done", "failed"]


class ScanDoc(Document):
    repo: str
    type: Literal["scan"] = "scan"
    registry: str
    repository: str
    digest: str
    state: ScanState = "queued"
    reason: str | None = None
    counts: dict[str, int] | None = None
    worst: dict[str, str] | None = None
    packages: int | None = None
    sbomDigest: str | None = None
    reportDigest: str | None = None
    advisoryDb: str | None = None
    fingerprint: str | None = None
    leaseUntil: float | None = None
    requested: str | None = None
    updated: str = Field(default_factory=utcnow)
    children: dict[str, str] | None = None

    def summary(self) -> dict[str, Any]:
        """What /acr/v1 and `acr scan show` report (the extension field `scan`)."""
        shown: dict[str, Any] = {"state": self.state, "updated": self.updated}
        for key in ("reason", "counts", "worst", "packages", "sbomDigest", "reportDigest", "advisoryDb", "children"):
            value = getattr(self, key)
            if value is not None:
                shown[key] = value
        return shown


def scan_id(digest: str) -> str:
    return f"scan:{digest}"


class ScanStore:
    def __init__(self, cosmos: Cosmos) -> None:
        self._cosmos = cosmos

    async def get(self, repo: str, digest: str) -> ScanDoc | None:
        doc = await self._cosmos.read("artifacts", scan_id(digest), repo)
        return ScanDoc.model_validate(doc) if doc else None

    async def create(self, doc: ScanDoc) -> ScanDoc | None:
        """Create the scan document; None when one exists already."""
        created = await self._cosmos.create("artifacts", doc)
        return ScanDoc.model_validate(created) if created is not None else None

    async def replace(self, doc: ScanDoc) -> ScanDoc:
        """Write back only if unchanged since read (ConcurrentUpdate otherwise)."""
        return ScanDoc.model_validate(await self._cosmos.replace("artifacts", doc))

    async def delete(self, repo: str, digest: str) -> bool:
        return await self._cosmos.delete("artifacts", scan_id(digest), repo)

    async def stale(self, database_version: str, limit: int) -> AsyncIterator[ScanDoc]:
        """Finished scans of images (not indexes) matched against another database version."""
        sql = (
            "SELECT * FROM c WHERE c.type = 'scan' AND c.state = 'done' AND IS_DEFINED(c.sbomDigest) "
            "AND c.advisoryDb != @v"
        )
        count = 0
        async for item in self._cosmos.query_across("artifacts", sql, {"@v": database_version}, page=100):
            yield ScanDoc.model_validate(item)
            count += 1
            if count >= limit:
                return
