"""An image's scan state as /acr/v1 shows it, and a rescan asked for through it (`acr scan run`)."""

from __future__ import annotations

from typing import Any

from services.platform.cosmos import ConcurrentUpdate, Cosmos, utcnow
from services.registry.errors import ErrorCode, RegistryError
from services.registry.store import ManifestDoc
from services.scanning.quarantine import scannable
from services.scanning.store import ScanDoc, ScanStore, scan_id

ATTEMPTS = 8


async def scan_status(metadata: Cosmos, manifest: ManifestDoc) -> dict[str, Any] | None:
    """The extension field `scan` of a manifest: its scan's summary, `queued` for an image not scanned yet,
    None for what is not scanned (artifacts)."""
    if not scannable(manifest):
        return None
    scan = await ScanStore(metadata).get(manifest.repo, manifest.digest)
    return scan.summary() if scan is not None else {"state": "queued"}


async def request_rescan(metadata: Cosmos, registry: str, repository: str, manifest: ManifestDoc) -> dict[str, Any]:
    """Mark the image `queued` for a rescan (the scanner's `run_requested` timer takes it); a scan running
    now is left alone (its result is the rescan). 400 UNSUPPORTED for what is not an image."""
    if not scannable(manifest):
        raise RegistryError(ErrorCode.UNSUPPORTED, "only images and indexes of images are scanned", status=400)
    scans = ScanStore(metadata)
    for _ in range(ATTEMPTS):
        existing = await scans.get(manifest.repo, manifest.digest)
        if existing is None:
            fresh = ScanDoc(
                id=scan_id(manifest.digest),
                repo=manifest.repo,
                registry=registry,
                repository=repository,
                digest=manifest.digest,
                state="queued",
                requested=utcnow(),
            )
            created = await scans.create(fresh)
            if created is not None:
                return created.summary()
            continue
        if existing.state in ("scanning", "queued"):
            return existing.summary()
        existing.state, existing.requested, existing.updated = "queued", utcnow(), utcnow()
        try:
            return (await scans.replace(existing)).summary()
        except ConcurrentUpdate:
            continue
    raise ConcurrentUpdate(f"scan of {manifest.digest}")
