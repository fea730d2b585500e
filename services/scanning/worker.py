"""The scan worker: the consumer of the bus's `scanning` subscription, the rescan queue and the re-match.

For a pushed image manifest: claim its scan (store.py), stream each layer from Blob Storage through
`layers.read_layer_stream` (one layer at a time, parsed in a worker thread), build the inventory, match it
against the advisory database, attach the SBOM and the vulnerability report as referrers, and record the
outcome. A hostile or broken layer ends the scan `failed` with the reason; the message is completed (a
retry would fail the same way). Anything else that goes wrong (Cosmos or Storage unavailable) raises, so the
bus redelivers the event, and the claim's lease lets the retry take over.

For an index: each image it lists is scanned (each platform), and the index's own scan state sums them;
while a child is being scanned elsewhere the event is retried later. Artifacts (anything with a subject or
an artifactType, charts, our own reports) are not scanned.

Re-match (`rematch`): when the advisory database changes, every finished scan matched against another
version gets its SBOM read back (no layer is read again), is matched again, and when the findings changed
gets a new report referrer in place of the old one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from services.auth.permissions import PULL, QUARANTINE_READ, Grant, Permissions, RepositoryPattern
from services.auth.scopes import Scope
from services.auth.service import AuthService, Identity
from services.events.models import EventMessage, EventRequest
from services.events.outbox import EventPublisher
from services.management.store import RegistryStore
from services.platform.blobs import BlobStore
from services.platform.cosmos import ConcurrentUpdate, Cosmos, utcnow
from services.platform.lifecycle import close_on_shutdown
from services.platform.settings import Settings, get_settings
from services.platform.telemetry import telemetry
from services.registry.ledger import BlobLedger
from services.registry.manifest import EMPTY_JSON_DIGEST, INDEX_TYPES, parse_manifest
from services.registry.store import ArtifactStore, ManifestDoc, repo_key
from services.scanning import quarantine
from services.scanning.advisories import (
    SEVERITY_RANK,
    AdvisoryDatabase,
    Finding,
    finding_from_json,
    findings_fingerprint,
    severity_counts,
)
from services.scanning.documents import (
    REPORT_MEDIA_TYPE,
    SBOM_MEDIA_TYPE,
    sbom_packages,
    spdx_document,
    vulnerability_report,
    worst_finding,
)
from services.scanning.harbor import ExternalScannerError, HarborAdapterClient, external_scanner, harbor_findings
from services.scanning.inventory import Inventory, build_inventory
from services.scanning.layers import HostileLayer, ImageFiles, ScanLimits, read_layer_stream
from services.scanning.quarantine import scannable
from services.scanning.referrers import ReferrerWriter
from services.scanning.release import set_quarantine_state
from services.scanning.sources import AdvisorySource
from services.scanning.status import request_rescan
from services.scanning.store import ScanDoc, ScanStore

log = logging.getLogger("scanning")

SCANNED_ACTIONS = frozenset({"push", "quarantine"})
MAX_INDEX_DEPTH = 2
SCANNER_AGENT = "acr-serverless-scanner/1.0"
EXTERNAL_SCANNER_SUBJECT = "external-scanner"  # the subject of the pull tokens an external scanner gets
REMATCH_BATCH = 1000  # scans one re-match run takes on (the next run continues)
# Re-matches at once: each reads an SBOM and may write a report (a few Cosmos DB and Storage calls); more would
# crowd the registry's storage-usage document, which takes one writer at a time.
REMATCH_CONCURRENCY = 4


class ScanInProgress(Exception):
    """An image of an index is being scanned elsewhere: the index's event is retried later."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one image's scan found, before it is recorded."""

    inventory: Inventory
    findings: list[Finding]
    database: AdvisoryDatabase


@dataclass(slots=True)
class Rematched:
    processed: int = 0  # scans matched again
    replaced: int = 0  # of which the report changed (a new report referrer replaced the old one)


# Called after a scan is recorded (the quarantine flow, services/scanning/quarantine.py, hooks in here).
ScanListener = Callable[[str, str, ManifestDoc, ScanDoc], Awaitable[None]]


class ImageScanner:
    def __init__(self, settings: Settings, metadata: Cosmos | None = None, blobs: BlobStore | None = None) -> None:
        self.settings = settings
        self.metadata = metadata if metadata is not None else Cosmos(settings)
        self.blobs = blobs if blobs is not None else BlobStore(settings)
        self._owns = metadata is None, blobs is None
        self.artifacts = ArtifactStore(self.metadata)
        self.scans = ScanStore(self.metadata)
        self.advisories = AdvisorySource(settings.advisory_db, self.blobs)
        self.referrers = ReferrerWriter(
            self.artifacts, self.blobs, settings.inline_manifest_bytes, BlobLedger(self.metadata)
        )
        self.limits = ScanLimits(max_layer_bytes=settings.scan_max_layer_bytes)
        self.registries = RegistryStore(self.metadata)
        self.auth = AuthService(settings, self.metadata)  # signs the external scanner's pull tokens
        self.events = EventPublisher(settings, self.metadata)
        self.listeners: list[ScanListener] = [self._settle_quarantine]
        self._slots = asyncio.Semaphore(max(1, settings.scan_concurrency))
        self._opened = False
        self._opening = asyncio.Lock()

    async def open(self) -> None:
        async with self._opening:
            if not self._opened:
                if self._owns[0]:
                    await self.metadata.open()
                if self._owns[1]:
                    await self.blobs.open()
                await self.events.open()
                self._opened = True

    async def close(self) -> None:
        await self.events.close()
        if self._owns[0]:
            await self.metadata.close()
        if self._owns[1]:
            await self.blobs.close()
        self._opened = False

    # --- the bus consumer --------------------------------------------------------------------------
    async def handle_message(self, body: bytes | str) -> ScanDoc | None:
        """One bus message (an `EventMessage`): scan what a push brought."""
        await self.open()
        message = EventMessage.model_validate_json(body)
        event = message.event
        if event.action not in SCANNED_ACTIONS or not self.settings.scanner_enabled:
            return None
        if event.region is not None:  # a geo-replicated push's per-region echo: the push itself was scanned
            return None
        with telemetry().span("image scan", {"event.action": event.action}):
            return await self.scan(message.registry, event.target.repository, event.target.digest)

    async def scan(
        self, registry: str, repository: str, digest: str, force: bool = False, depth: int = 0
    ) -> ScanDoc | None:
        """Scan one manifest (an image, or each image of an index); None when it is not one to scan."""
        await self.open()
        repo = repo_key(registry, repository)
        manifest = await self.artifacts.get_manifest(repo, digest)
        if manifest is None or not scannable(manifest):
            return None
        if manifest.mediaType in INDEX_TYPES:
            return await self._scan_index(registry, repository, manifest, force, depth)
        claimed = await self._claim(registry, repository, manifest, force)
        if claimed is None:
            return await self.scans.get(repo, digest)
        async with self._slots:
            try:
                outcome = await self._inspect(registry, repository, manifest)
            except HostileLayer as exc:
                log.warning("scan of %s@%s failed: %s", repository, digest, exc.reason)
                return await self._finish(registry, repository, manifest, claimed, reason=exc.reason)
            except ResourceNotFoundError:
                reason = "a layer of the image is missing from storage"
                return await self._finish(registry, repository, manifest, claimed, reason=reason)
            try:
                outcome = await self._external(registry, repository, manifest, outcome)
            except ExternalScannerError as exc:
                reason = f"external scanner: {exc}"
                return await self._finish(registry, repository, manifest, claimed, reason=reason)
            except BaseException:
                await self._release(claimed)  # the redelivered event may scan it at once
                raise
        return await self._finish(registry, repository, manifest, claimed, outcome=outcome)

    async def _release(self, claimed: ScanDoc) -> None:
        """Give a claim back after an unexpected failure (storage or Cosmos down), so a retry can take it."""
        claimed.state, claimed.leaseUntil = "queued", None
        try:
            await self.scans.replace(claimed)
        except Exception:
            log.warning("could not release the scan claim of %s; its lease will run out", claimed.digest)

    async def _claim(self, registry: str, repository: str, manifest: ManifestDoc, force: bool) -> ScanDoc | None:
        """The scan document, now `scanning` under a lease held by this call; None when it is not ours to
        scan (done already, unless forced or a rescan was asked for; or being scanned elsewhere)."""
        repo = repo_key(registry, repository)
        existing = await self.scans.get(repo, manifest.digest)
        now = time.time()
        lease = now + self.settings.scan_lease_seconds
        if existing is None:
            fresh = ScanDoc(
                id=f"scan:{manifest.digest}",
                repo=repo,
                registry=registry,
                repository=repository,
                digest=manifest.digest,
                state="scanning",
                leaseUntil=lease,
            )
            return await self.scans.create(fresh)
        if existing.state in ("done", "failed") and not force:
            return None
        if existing.state == "scanning" and (existing.leaseUntil or 0) > now:
            return None
        existing.state, existing.leaseUntil, existing.updated = "scanning", lease, utcnow()
        try:
            return await self.scans.replace(existing)
        except ConcurrentUpdate:
            return None

    async def _inspect(self, registry: str, repository: str, manifest: ManifestDoc) -> Outcome:
        content = manifest.inline_content()
        if content is None:
            content = await self.blobs.read_all(registry, manifest.digest)
        parsed = parse_manifest(content, manifest.mediaType)
        image = ImageFiles(self.limits)
        for layer in parsed.layers:
            if layer.urls:  # a foreign layer: its bytes are not ours to read
                continue
            if layer.size == 0:
                raise HostileLayer(f"malformed layer: {layer.digest} is empty (not a tar archive)")
            image.apply(await read_layer_stream(self.blobs.read_in_chunks(registry, str(layer.digest)), self.limits))
        inventory = build_inventory(image.files, image.skipped)
        database = await self.advisories.current()
        return Outcome(inventory, database.match(inventory.packages), database)

    async def _external(self, registry: str, repository: str, manifest: ManifestDoc, outcome: Outcome) -> Outcome:
        """The registry's external scanner (Harbor's adapter API), when it has one: its findings join ours."""
        doc = await self.registries.get_registry(registry)
        scanner = external_scanner(doc.policies) if doc is not None else None
        if doc is None or scanner is None:
            return outcome
        identity = Identity(
            "token",
            EXTERNAL_SCANNER_SUBJECT,
            Permissions((Grant(RepositoryPattern("exact", repository), frozenset({PULL, QUARANTINE_READ})),)),
        )
        token = self.auth.access_token(doc, identity, [Scope("repository", repository, ("pull",))])["access_token"]
        registry_url = scanner.registry_url or f"https://{doc.loginServer}"
        deadline = time.monotonic() + self.settings.external_scanner_timeout_seconds
        allow_private = self.settings.external_scanner_allow_private_targets
        async with HarborAdapterClient(scanner.url, allow_private) as adapter:
            metadata = await adapter.metadata()
            name = str(metadata["scanner"].get("name", "external"))[:100]
            scan_id = await adapter.scan(
                registry_url, f"Bearer {token}", repository, manifest.digest, manifest.mediaType
            )
            report = await adapter.report(scan_id, deadline)
        findings = sorted({*outcome.findings, *harbor_findings(report, name)}, key=_finding_order)
        return Outcome(outcome.inventory, findings, outcome.database)

    async def _finish(
        self,
        registry: str,
        repository: str,
        manifest: ManifestDoc,
        claimed: ScanDoc,
        outcome: Outcome | None = None,
        reason: str | None = None,
    ) -> ScanDoc:
        repo = repo_key(registry, repository)
        doc = claimed.model_copy()
        old_sbom, old_report = doc.sbomDigest, doc.reportDigest
        if outcome is None:
            doc.state, doc.reason, doc.counts, doc.worst = "failed", reason, None, None
            doc.sbomDigest = doc.reportDigest = doc.fingerprint = None
        else:
            inventory, findings, database = outcome.inventory, outcome.findings, outcome.database
            os_name = (inventory.os.pretty_name or inventory.os.id) if inventory.os is not None else None
            sbom = spdx_document(manifest.digest, repository, inventory)
            doc.sbomDigest = await self.referrers.attach(
                registry, repo, manifest, SBOM_MEDIA_TYPE, sbom, "sbom.spdx.json"
            )
            doc.reportDigest = await self._attach_report(
                registry, repository, manifest, findings, database, len(inventory.packages), os_name
            )
            doc.state, doc.reason, doc.packages = "done", None, len(inventory.packages)
            self._record_findings(doc, findings, database)
        doc.leaseUntil, doc.requested, doc.updated = None, None, utcnow()
        written = await self.scans.replace(doc)
        await self.referrers.remove(repo, old_sbom, written.sbomDigest)
        await self.referrers.remove(repo, old_report, written.reportDigest)
        for listener in self.listeners:
            await listener(registry, repository, manifest, written)
        return written

    async def _attach_report(
        self,
        registry: str,
        repository: str,
        manifest: ManifestDoc,
        findings: list[Finding],
        database: AdvisoryDatabase,
        count: int,
        os_name: str | None,
    ) -> str:
        report = vulnerability_report(
            manifest.digest,
            manifest.mediaType,
            repository,
            findings,
            database.version,
            database.records,
            os_name,
            count,
        )
        annotations = {"dev.acr-serverless.scan.advisory-db": database.version}
        return await self.referrers.attach(
            registry,
            repo_key(registry, repository),
            manifest,
            REPORT_MEDIA_TYPE,
            report,
            "vulnerabilities.json",
            annotations,
        )

    @staticmethod
    def _record_findings(doc: ScanDoc, findings: list[Finding], database: AdvisoryDatabase) -> None:
        doc.counts = severity_counts(findings)
        worst = worst_finding(findings)
        doc.worst = (
            None
            if worst is None
            else {
                "id": worst.id,
                "severity": worst.severity,
                "package": worst.package.name,
                "version": worst.package.version,
            }
        )
        doc.advisoryDb, doc.fingerprint = database.version, findings_fingerprint(findings)

    async def _scan_index(
        self, registry: str, repository: str, index: ManifestDoc, force: bool, depth: int
    ) -> ScanDoc | None:
        if depth >= MAX_INDEX_DEPTH:
            return None
        children: dict[str, ScanDoc] = {}
        for child in index.children:
            found = await self.scan(registry, repository, child, force, depth + 1)
            if found is not None:
                children[child] = found
        if any(doc.state in ("scanning", "queued") for doc in children.values()):
            raise ScanInProgress(f"an image of index {index.digest} is still being scanned")
        repo = repo_key(registry, repository)
        failed = [doc for doc in children.values() if doc.state == "failed"]
        counts: dict[str, int] = {}
        for doc in children.values():
            for severity, count in (doc.counts or {}).items():
                counts[severity] = counts.get(severity, 0) + count
        worsts = [doc.worst for doc in children.values() if doc.worst]
        summary = ScanDoc(
            id=f"scan:{index.digest}",
            repo=repo,
            registry=registry,
            repository=repository,
            digest=index.digest,
            state="failed" if failed else "done",
            reason=f"{len(failed)} of {len(children)} images failed: {failed[0].reason}" if failed else None,
            counts=counts if not failed else None,
            worst=_worst_of(worsts),
            children={digest: doc.state for digest, doc in children.items()},
        )
        existing = await self.scans.get(repo, index.digest)
        if existing is not None:
            summary.etag = existing.etag
            try:
                written = await self.scans.replace(summary)
            except ConcurrentUpdate:
                return await self.scans.get(repo, index.digest)
        else:
            created = await self.scans.create(summary)
            if created is None:
                return await self.scans.get(repo, index.digest)
            written = created
        for listener in self.listeners:
            await listener(registry, repository, index, written)
        return written

    async def _settle_quarantine(self, registry: str, repository: str, manifest: ManifestDoc, scan: ScanDoc) -> None:
        """A held image whose scan ended: Passed (released, `push` raised) when the scan is done and the
        registry's vulnerability policy (if any) does not block its worst finding; Failed otherwise."""
        if not quarantine.held(manifest.quarantineState):
            return
        doc = await self.registries.get_registry(registry)
        if doc is None or not quarantine.quarantine_enabled(doc):
            return
        policy = quarantine.vulnerability_policy(doc)
        blocked = (
            policy is not None and not policy.exempts(repository) and policy.blocks((scan.worst or {}).get("severity"))
        )
        state = quarantine.PASSED if scan.state == "done" and not blocked else quarantine.FAILED
        request = EventRequest(id=str(uuid.uuid4()), host=doc.loginServer, method="PATCH", useragent=SCANNER_AGENT)
        await set_quarantine_state(
            self.artifacts,
            self.events,
            doc,
            repository,
            repo_key(registry, repository),
            manifest.digest,
            state,
            quarantine.scan_details(scan),
            request,
        )

    # --- rescans asked for, and re-matching -----------------------------------------------------------
    async def request_rescan(self, registry: str, repository: str, manifest: ManifestDoc) -> dict[str, Any]:
        """Mark the image `queued` for a rescan (`acr scan run`); `run_requested` picks it up."""
        await self.open()
        return await request_rescan(self.metadata, registry, repository, manifest)

    async def run_requested(self, limit: int = 20) -> int:
        """Scan the images whose rescan was asked for; returns how many were scanned."""
        if not self.settings.scanner_enabled:
            return 0
        await self.open()
        sql = "SELECT * FROM c WHERE c.type = 'scan' AND c.state = 'queued'"
        queued = [ScanDoc.model_validate(item) async for item in self.metadata.query_across("artifacts", sql)]
        done = 0
        for doc in queued[:limit]:
            try:
                if await self.scan(doc.registry, doc.repository, doc.digest, force=True) is not None:
                    done += 1
                else:
                    await self.scans.delete(doc.repo, doc.digest)  # the manifest is gone or not an image
            except ScanInProgress:
                continue
        return done

    async def rematch(self, limit: int = REMATCH_BATCH) -> Rematched:
        """Re-match stored SBOMs against the current database. Without a database configured nothing is
        re-matched (reports made without one say so)."""
        result = Rematched()
        if not self.settings.scanner_enabled or not self.advisories.spec:
            return result
        await self.open()
        database = await self.advisories.current()
        slots = asyncio.Semaphore(REMATCH_CONCURRENCY)

        async def one(doc: ScanDoc) -> None:
            async with slots:
                try:
                    if await self._rematch_one(doc, database):
                        result.replaced += 1
                except Exception:  # this one is left for the next run; the others go on
                    log.exception("re-match of %s@%s failed", doc.repository, doc.digest)
                    return
                result.processed += 1

        await asyncio.gather(*[one(doc) async for doc in self.scans.stale(database.version, limit)])
        return result

    async def _rematch_one(self, doc: ScanDoc, database: AdvisoryDatabase) -> bool:
        manifest = await self.artifacts.get_manifest(doc.repo, doc.digest)
        if manifest is None or doc.sbomDigest is None:
            await self.scans.delete(doc.repo, doc.digest)
            return False
        sbom = await self.artifacts.get_manifest(doc.repo, doc.sbomDigest)
        if sbom is None or not sbom.blobs:
            doc.state, doc.requested = "queued", utcnow()  # the SBOM was deleted: scan the layers again
            await self._replace_quietly(doc)
            return False
        layer = next(digest for digest in sbom.blobs if digest != str(EMPTY_JSON_DIGEST))
        packages = sbom_packages(await self.blobs.read_all(doc.registry, layer))
        # an external scanner's findings stay as they were (a rescan asks it again)
        findings = sorted({*database.match(packages), *await self._external_findings(doc)}, key=_finding_order)
        changed = findings_fingerprint(findings) != doc.fingerprint
        old_report = doc.reportDigest
        if changed:
            doc.reportDigest = await self._attach_report(
                doc.registry, doc.repository, manifest, findings, database, len(packages), None
            )
        self._record_findings(doc, findings, database)
        doc.updated = utcnow()
        written = await self._replace_quietly(doc)
        if written is None:
            return False
        await self.referrers.remove(doc.repo, old_report, written.reportDigest)
        return changed

    async def _external_findings(self, doc: ScanDoc) -> list[Finding]:
        """The external scanner's findings in the image's current report."""
        report = await self.artifacts.get_manifest(doc.repo, doc.reportDigest) if doc.reportDigest else None
        if report is None:
            return []
        layer = next((d for d in report.blobs if d != str(EMPTY_JSON_DIGEST)), None)
        if layer is None:
            return []
        items = json.loads(await self.blobs.read_all(doc.registry, layer)).get("findings") or []
        return [
            finding_from_json(item)
            for item in items
            if str(item.get("package", {}).get("ecosystem", "")).startswith("external:")
        ]

    async def _replace_quietly(self, doc: ScanDoc) -> ScanDoc | None:
        try:
            return await self.scans.replace(doc)
        except ConcurrentUpdate:
            return None  # changed meanwhile (a rescan): the next run looks again


def _finding_order(finding: Finding) -> tuple[int, str, str]:
    return (-SEVERITY_RANK[finding.severity], finding.package.name, finding.id)


def _worst_of(worsts: list[dict[str, str]]) -> dict[str, str] | None:
    ranked = sorted(worsts, key=lambda w: (-SEVERITY_RANK.get(w.get("severity", "UNKNOWN"), 0), w.get("id", "")))
    return ranked[0] if ranked else None


_scanner: ImageScanner | None = None


def image_scanner() -> ImageScanner:
    """The process's scanner (opened on first use, closed at shutdown)."""
    global _scanner
    if _scanner is None:
        _scanner = ImageScanner(get_settings())
        close_on_shutdown(_scanner.close)
    return _scanner
