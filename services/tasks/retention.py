"""Task files kept `TASKS_LOG_RETENTION_DAYS` (default 30, as ACR keeps run logs), then deleted by the
`expire_task_files` timer (daily; services/tasks/functions.py):

    run logs     the log of each run that finished before the cutoff is deleted and its document says so
                 (`logExpired`, `logExpiredTime`; listLogSasUrl then answers 404 naming the expiry)
    sources      uploaded contexts (`tasks/sources/...`) last written before the cutoff, except those a task
                 still names as its context (a task's context lives as long as the task)

`now` is a parameter, so a test moves the clock instead of waiting a month. Each pass handles at most
`MAX_RUNS_PER_PASS` logs (the next day's pass, or the next call, takes the rest).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from services.management.store import RegistryStore
from services.platform.blobs import BlobStore
from services.platform.cosmos import Cosmos
from services.platform.settings import Settings
from services.tasks.store import RunStore, TaskStore

log = logging.getLogger("tasks")

MAX_RUNS_PER_PASS = 500
SOURCES_PREFIX = "tasks/sources/"


@dataclass(frozen=True, slots=True)
class Expired:
    logs: int
    sources: int


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


async def expire_task_files(
    metadata: Cosmos, blobs: BlobStore, settings: Settings, now: datetime, registries: Collection[str] | None = None
) -> Expired:
    """One pass at `now`; `registries` limits it to those (None: every registry)."""
    cutoff = now - timedelta(days=settings.tasks_log_retention_days)
    runs = RunStore(metadata)
    logs = 0
    for run in await runs.with_expiring_logs(_iso(cutoff), MAX_RUNS_PER_PASS, registries):
        await blobs.delete_path(run.registry, run.logPath)
        # the blob first: a pass that dies between the two deletes an absent blob again next time
        await runs.patch(run.registry, run.runId, {"logExpired": True, "logExpiredTime": _iso(now)})
        logs += 1
    sources = 0
    for registry in await RegistryStore(metadata).list_registries():
        if registry.provisioningState == "Deleting" or (registries is not None and registry.registry not in registries):
            continue
        kept = {
            str(task.step.get("contextPath", "")) for task in await TaskStore(metadata).list_tasks(registry.registry)
        }
        doomed = [
            name
            async for name, modified in blobs.list_paths(registry.registry, SOURCES_PREFIX)
            if modified < cutoff and name not in kept
        ]
        for name in doomed:
            await blobs.delete_path(registry.registry, name)
            sources += 1
    if logs or sources:
        log.info("expire_task_files: %d run log(s), %d uploaded source(s) deleted", logs, sources)
    return Expired(logs, sources)
