"""The background jobs of a replica's life: backfilling a new one with the content pushed before it existed,
and removing one (its copies) when it is deleted.

Backfill walks the registry's repositories and their manifests in name order and copies each image into
the new region as the worker does for a push (services/replication/worker.py: blobs already there are not
copied again), recording the image's status for that region. It keeps its progress on the replication
(`backfillDone` of `backfillTotal`, shown as the replication's status message and `properties.backfill`)
and where it stopped (`backfillCursor`), so a runner that dies is resumed by the `resume_replica_jobs`
timer from there once its lease (`backfillLease`, renewed as it goes) is older than LEASE_SECONDS. When it
is done the replication is `Ready`.

Removing a replica deletes the registry's container in that region's account (when the region has an
account of its own) and the region's entries in the images' status, then the replication itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.management.store import RegistryStore
from services.platform.cosmos import utcnow
from services.registry.store import ManifestDoc, repo_key
from services.replication.store import ImageReplicationDoc, RegionCopy, ReplicationDoc, ReplicationStore, status_id
from services.replication.worker import ReplicationWorker, blobs_of

log = logging.getLogger("replication")

LEASE_SECONDS = 60.0
PROGRESS_EVERY = 10  # images between two progress writes


@dataclass
class BackfillResult:
    images: int = 0  # images looked at in this run
    copied: int = 0  # blobs copied in this run (0 when the region had everything already)
    finished: bool = False


def lease_expired(doc: ReplicationDoc, now: datetime | None = None) -> bool:
    if doc.backfillLease is None:
        return True
    since = datetime.fromisoformat(doc.backfillLease.replace("Z", "+00:00"))
    return (now or datetime.now(UTC)) - since > timedelta(seconds=LEASE_SECONDS)


async def backfill(worker: ReplicationWorker, registry: str, name: str) -> BackfillResult:
    """Bring a replica up to date with everything pushed before it existed (resumes where a previous run
    stopped)."""
    await worker.open()
    replicas = ReplicationStore(worker.metadata)
    doc = await replicas.get(registry, name)
    result = BackfillResult()
    registry_doc = await RegistryStore(worker.metadata).get_registry(registry)
    if doc is None or registry_doc is None or doc.provisioningState == "Deleting" or not doc.syncing:
        return result
    region, source = doc.location, worker.regions.home or registry_doc.location
    artifacts = worker.artifacts
    repositories = sorted(await artifacts.all_repositories(registry))
    total = 0
    for repository in repositories:
        total += await artifacts.count(repo_key(registry, repository), "manifest")
    done = doc.backfillDone if doc.backfillCursor else 0
    await replicas.set_fields(registry, name, {"backfillTotal": max(total, done), "backfillLease": utcnow()})
    cursor = tuple(doc.backfillCursor.split(" ", 1)) if doc.backfillCursor else ("", "")
    for repository in repositories:
        if repository < cursor[0]:
            continue
        repo = repo_key(registry, repository)
        manifests = sorted(
            (ManifestDoc.model_validate(item) for item in await artifacts.all_of(repo, "manifest")),
            key=lambda m: m.digest,
        )
        for manifest in manifests:
            if (repository, manifest.digest) <= cursor:
                continue
            if not worker.regions.same_account(region, source):
                result.copied += await worker.copy_into(
                    registry, repo, await blobs_of(artifacts, repo, manifest), region, source
                )
            await _record(worker, repo, manifest, region)
            done += 1
            result.images += 1
            if result.images % PROGRESS_EVERY == 0:
                progress = {"backfillDone": done, "backfillCursor": f"{repository} {manifest.digest}"}
                if not await replicas.set_fields(registry, name, progress | {"backfillLease": utcnow()}):
                    return result  # the replica was deleted meanwhile
    finished = {"backfillDone": done, "backfillTotal": max(total, done), "backfillCursor": None, "syncing": False}
    await replicas.set_fields(registry, name, finished | {"statusTimestamp": utcnow(), "backfillLease": None})
    result.finished = True
    log.info("backfill of %s in %s done: %d images, %d blobs copied", registry, region, result.images, result.copied)
    return result


async def _record(worker: ReplicationWorker, repo: str, manifest: ManifestDoc, region: str) -> None:
    """The image is in `region`: say so in its status (made, if it has none, from the manifest's push)."""
    entry = RegionCopy(state="copied", time=utcnow(), attempts=1)
    status = await worker.status.start(
        ImageReplicationDoc(
            id=status_id(manifest.digest),
            repo=repo,
            digest=manifest.digest,
            pushed=manifest.last_update,
            regions={region: entry},
        )
    )
    if status.regions.get(region, RegionCopy()).state != "copied":
        await worker.status.set_region(repo, manifest.digest, region, entry)


async def remove_replica(worker: ReplicationWorker, registry: str, name: str) -> bool:
    """Delete a replica marked Deleting: its copies, its entries in the images' status, then itself.
    Every step can run again. False when there is no such replica any more."""
    await worker.open()
    replicas = ReplicationStore(worker.metadata)
    doc = await replicas.get(registry, name)
    if doc is None:
        return False
    home = worker.regions.home or doc.location
    if not worker.regions.same_account(doc.location, home):
        await (await worker.regions.store(doc.location)).delete_registry_container(registry)
    async for status in worker.status.of_registry(registry):
        if doc.location in status.regions:
            await worker.status.forget_region(status.repo, status.digest, doc.location)
    await replicas.delete(registry, name)
    if doc.deleteOperation:
        store = RegistryStore(worker.metadata)
        operation = await store.get_operation(doc.deleteOperation)
        if operation is not None:
            operation.status, operation.endTime = "Succeeded", utcnow()
            await store.put_operation(operation)
    return True


async def resume_jobs(worker: ReplicationWorker) -> int:
    """Resume the backfills whose runner died (lease expired) and the removals left unfinished."""
    await worker.open()
    resumed = 0
    for doc in await ReplicationStore(worker.metadata).unfinished():
        try:
            if doc.provisioningState == "Deleting":
                resumed += await remove_replica(worker, doc.registry, doc.name)
            elif lease_expired(doc):
                resumed += (await backfill(worker, doc.registry, doc.name)).finished
        except Exception:  # one stuck replica must not stop the others; the next run tries again
            log.exception("the job of replica %s of %s did not finish", doc.name, doc.registry)
    return resumed
