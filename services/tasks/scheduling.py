"""Scheduling runs: the rules between the API and the queue.

    schedule_quick_build  checks the source the request names exists, takes the next run id, writes the run
                          (`dispatched: false`), sends its queue message, marks it dispatched
    relay_runs            re-sends the messages of runs written but never dispatched (the process died
                          between the write and the send, or the queue was down)
    request_cancel        a queued run is Canceled at once; a running one is flagged for its runner

Secret build arguments are sealed in the run document (services/platform/secrets.py), bound to the run.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

from services.platform.blobs import BlobStore
from services.platform.cosmos import ConcurrentUpdate, Cosmos, utcnow
from services.platform.secrets import SecretBox
from services.platform.settings import Settings
from services.tasks.models import SOURCE_PATH, TERMINAL, DockerBuildRequest, RunDoc, RunMessage
from services.tasks.queue import RunQueue
from services.tasks.store import RunStore, run_doc_id

log = logging.getLogger("tasks")


class RunRequestInvalid(ValueError):
    pass


class RunNotFound(LookupError):
    pass


def secret_context(registry: str, run_id: str) -> str:
    return f"task-run:{registry}:{run_id}"


def new_source_path(now: datetime | None = None) -> str:
    moment = now or datetime.now(UTC)
    return f"tasks/sources/{moment:%Y%m%d}/{uuid.uuid4().hex}.tar.gz"


def log_path(run_id: str) -> str:
    return f"tasks/logs/{run_id}.log"


async def schedule_quick_build(
    metadata: Cosmos,
    blobs: BlobStore,
    queue: RunQueue,
    box: SecretBox,
    registry: str,
    request: DockerBuildRequest,
) -> RunDoc:
    source = request.sourceLocation or ""
    if not SOURCE_PATH.fullmatch(source):
        raise RunRequestInvalid("sourceLocation must be the relativePath that listBuildSourceUploadUrl gave")
    if await blobs.path_size(registry, source) is None:
        raise RunRequestInvalid("nothing was uploaded to sourceLocation")
    store = RunStore(metadata)
    run_id = await store.next_run_id(registry)
    body = request.model_dump(mode="json")
    for argument in body["arguments"]:
        if argument["isSecret"]:
            argument["value"] = box.seal(argument["value"].encode(), secret_context(registry, run_id))
    run = RunDoc(
        id=run_doc_id(run_id),
        registry=registry,
        runId=run_id,
        number=int(run_id[2:]),
        request=body,
        logPath=log_path(run_id),
        isArchiveEnabled=request.isArchiveEnabled,
    )
    await store.create(run)
    await dispatch(store, queue, run)
    return await store.get(registry, run_id) or run


async def dispatch(store: RunStore, queue: RunQueue, run: RunDoc) -> bool:
    """Send the run's queue message and mark it dispatched; False (logged) when the queue failed: the
    relay sends it later."""
    try:
        await queue.send(RunMessage(registry=run.registry, runId=run.runId))
        await store.patch(run.registry, run.runId, {"dispatched": True})
    except Exception:
        log.exception("dispatching run %s/%s failed; the relay will send it", run.registry, run.runId)
        return False
    return True


async def relay_runs(metadata: Cosmos, queue: RunQueue, settings: Settings) -> int:
    before = datetime.now(UTC) - timedelta(seconds=settings.tasks_relay_after_seconds)
    cutoff = before.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    store = RunStore(metadata)
    sent = 0
    for run in await store.undispatched(cutoff):
        if not await dispatch(store, queue, run):
            break
        sent += 1
    return sent


async def request_cancel(metadata: Cosmos, registry: str, run_id: str) -> RunDoc:
    store = RunStore(metadata)
    for _ in range(10):
        run = await store.get(registry, run_id)
        if run is None:
            raise RunNotFound(run_id)
        if run.status in TERMINAL:
            return run
        now = utcnow()
        if run.status == "Queued":
            run.status, run.finishTime = "Canceled", now
        run.cancelRequested, run.lastUpdatedTime = True, now
        try:
            return await store.replace(run)
        except ConcurrentUpdate:
            continue
    raise ConcurrentUpdate(run_id)
