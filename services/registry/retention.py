"""ACR's retention policy for untagged manifests (`retentionPolicy`, Premium, 0-365 days).

With the policy enabled, a manifest no tag points at is deleted once it has been untagged for `days`
(Docker and OCI media types alike), with its `delete` event, like a delete by digest; its blobs are then
released to the garbage collector. Kept whatever their age:

- manifests with `deleteEnabled: false` (and all of a repository whose `deleteEnabled` is false);
- the children of a tagged index (and theirs): they are part of a tagged image, not "untagged";
- referrers (signatures, SBOMs: manifests with a `subject`) while their subject is there.

When a manifest became untagged is not written by the pushes that move or delete tags (that would cost
every push a write): the timer notes `untaggedSince` on each untagged manifest the first time it finds it
so, and clears it when it finds it tagged again, so the clock runs from the first run that saw it untagged
(the timer runs hourly: at most an hour late). A manifest tagged again before its time is no longer
scheduled: the delete is conditioned on the manifest being unchanged since read, and a push of a tag
patches its manifest, so a tag added meanwhile makes the delete fail, and the next run finds it tagged.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from services.events.actions import delete_events
from services.events.models import EventRequest
from services.events.outbox import outbox_for
from services.management.store import RegistryDoc
from services.platform.cosmos import ConcurrentUpdate
from services.registry.audit import lifecycle_deletion
from services.registry.changes import facts_of
from services.registry.ledger import released
from services.registry.store import ArtifactStore, ManifestDoc, TagDoc, repo_key

log = logging.getLogger("registry.retention")
RETENTION_JOB = "retention-policy"  # the events' user agent, and the audit records' identity (system:...)


@dataclass
class RetentionReport:
    registry: str
    deleted: list[str] = field(default_factory=list)  # "<repository>@<digest>"
    scheduled: int = 0
    kept_locked: int = 0


def policy_days(registry: RegistryDoc) -> int | None:
    """The retention days when the policy applies to this registry (enabled, Premium), else None."""
    policy = registry.policies.get("retentionPolicy") or {}
    if policy.get("status") != "enabled" or registry.sku != "Premium":
        return None
    return int(policy.get("days", 7))


def untagged(manifests: list[ManifestDoc], tags: list[TagDoc]) -> list[ManifestDoc]:
    """The manifests that count as untagged: no tag, not reachable from a tagged index, not a referrer of
    a manifest that is there."""
    by_digest = {doc.digest: doc for doc in manifests}
    kept = {tag.digest for tag in tags}
    pending = list(kept)
    while pending:  # children of tagged indexes, and their children
        doc = by_digest.get(pending.pop())
        for child in doc.children if doc is not None else []:
            if child not in kept:
                kept.add(child)
                pending.append(child)
    return [
        doc
        for doc in manifests
        if doc.digest not in kept and not (doc.subject is not None and doc.subject in by_digest)
    ]


async def apply_retention(
    artifacts: ArtifactStore, registry: RegistryDoc, now: datetime | None = None
) -> RetentionReport:
    """One pass of the policy over every repository of the registry."""
    report = RetentionReport(registry.registry)
    days = policy_days(registry)
    if days is None:
        return report
    moment = now or datetime.now(UTC)
    stamp = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    cutoff = (moment - timedelta(days=days)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    request = EventRequest(id=str(uuid.uuid4()), host="", method="DELETE", useragent=RETENTION_JOB)
    for name in await artifacts.all_repositories(registry.registry):
        repo = repo_key(registry.registry, name)
        repository = await artifacts.get_repository(registry.registry, name)
        repository_locked = repository is not None and not repository.changeableAttributes.deleteEnabled
        manifests = [ManifestDoc.model_validate(item) for item in await artifacts.all_of(repo, "manifest")]
        tags = [TagDoc.model_validate(item) for item in await artifacts.all_of(repo, "tag")]
        candidates = {doc.digest for doc in untagged(manifests, tags)}
        for doc in manifests:
            if doc.digest not in candidates:
                if doc.untaggedSince is not None:  # tagged again: no longer scheduled
                    doc.untaggedSince = None
                    await _replace(artifacts, doc)
                continue
            if repository_locked or not doc.changeableAttributes.deleteEnabled:
                report.kept_locked += 1
                continue
            if doc.untaggedSince is None and days > 0:
                doc.untaggedSince = stamp
                if await _replace(artifacts, doc):
                    report.scheduled += 1
                continue
            if doc.untaggedSince is not None and doc.untaggedSince > cutoff:
                continue
            outbox = outbox_for(registry.registry, repo, delete_events(facts_of(name, doc), request))
            try:
                if await artifacts.delete_manifest(doc, [], outbox, released(registry.registry, doc)):
                    report.deleted.append(f"{name}@{doc.digest}")
                    lifecycle_deletion(RETENTION_JOB, registry.loginServer, name, doc.digest, doc.mediaType, doc.size)
            except ConcurrentUpdate:
                continue  # changed since read (tagged again, locked, pushed): the next run looks again
    if report.deleted:
        log.info("retention %s: %d untagged manifest(s) deleted", registry.registry, len(report.deleted))
    return report


async def _replace(artifacts: ArtifactStore, doc: ManifestDoc) -> bool:
    try:
        await artifacts.replace_artifact(doc)
    except ConcurrentUpdate:
        return False
    return True
