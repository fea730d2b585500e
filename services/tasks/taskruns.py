"""Task runs (`registries/{r}/taskRuns/{name}`): a run request kept as a resource. Creating one schedules its
run; a PATCH (or PUT) with another `forceUpdateTag` or another run request schedules it again; GET shows the
latest run, read fresh (`runResult`). Deleting a task run keeps its runs.

The request is any that scheduleRun takes (DockerBuildRequest, EncodedTaskRunRequest, FileTaskRunRequest,
TaskRunRequest). Its secret values (secret arguments and values, other registries' passwords) are stored
sealed to the task run and show as null except through `listDetails`.

The run is scheduled before the task run is written: a process dying between leaves a run (which goes on)
and no task run; the client's retry of the PUT schedules another.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from services.platform.blobs import BlobStore
from services.platform.cosmos import ConcurrentUpdate, Cosmos
from services.platform.secrets import SecretBox
from services.tasks.models import (
    TASK_RUN_NAME,
    DockerBuildRequest,
    EncodedTaskRunRequest,
    FileTaskRunRequest,
    RunDoc,
    TaskDoc,
    TaskRunBody,
    TaskRunDoc,
    TaskRunRequest,
)
from services.tasks.queue import RunQueue
from services.tasks.scheduling import (
    RunRequestInvalid,
    open_credentials,
    schedule_run,
    schedule_task_run,
    seal_credentials,
)
from services.tasks.store import TaskRunStore, TaskStore, task_run_doc_id

MAX_TASK_RUNS_PER_REGISTRY = 1000  # ours: ACR documents none
_NAME = re.compile(TASK_RUN_NAME)
REQUEST_TYPES: dict[str, type[DockerBuildRequest | EncodedTaskRunRequest | FileTaskRunRequest | TaskRunRequest]] = {
    "DockerBuildRequest": DockerBuildRequest,
    "EncodedTaskRunRequest": EncodedTaskRunRequest,
    "FileTaskRunRequest": FileTaskRunRequest,
    "TaskRunRequest": TaskRunRequest,
}
AnyRunRequest = DockerBuildRequest | EncodedTaskRunRequest | FileTaskRunRequest | TaskRunRequest


class TaskRunInvalid(ValueError):
    def __init__(self, message: str, status: int = 400, code: str = "InvalidRequestContent") -> None:
        super().__init__(message)
        self.status, self.code = status, code


class TaskRunNotFound(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class Scheduler:
    """What scheduling a run needs: the stores, the queue, the secrets box, and the registry's ids."""

    metadata: Cosmos
    blobs: BlobStore
    queue: RunQueue
    box: SecretBox
    registry: str
    login_server: str
    task_id_prefix: str  # `<registry's ARM id>/tasks/`: a TaskRunRequest names a task of this registry only


def valid_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


def secret_context(registry: str, name: str) -> str:
    return f"task-run-resource:{registry}:{name.lower()}"


def parse_request(raw: dict[str, Any]) -> AnyRunRequest:
    kind = raw.get("type")
    model = REQUEST_TYPES.get(kind) if isinstance(kind, str) else None
    if model is None:
        shown = str(kind)[:64]
        raise TaskRunInvalid(f"properties.runRequest: run requests of type {shown!r} are not supported")
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise TaskRunInvalid(f"properties.runRequest.{where}: {first['msg']}") from error


def _sealed(request: AnyRunRequest, box: SecretBox, context: str) -> dict[str, Any]:
    body = request.model_dump(mode="json", exclude_none=True)
    for entry in body.get("arguments", []) + body.get("values", []):
        if entry.get("isSecret"):
            entry["value"] = box.seal(entry["value"].encode(), context)
    registries = (body.get("credentials") or {}).get("customRegistries")
    if registries:
        live = {k: v for k, v in registries.items() if v is not None}
        body["credentials"]["customRegistries"] = seal_credentials(live, box, context)
    return body


def _opened(task_run: TaskRunDoc, box: SecretBox) -> dict[str, Any]:
    body = copy.deepcopy(task_run.runRequest)
    context = secret_context(task_run.registry, task_run.name)
    for entry in body.get("arguments", []) + body.get("values", []):
        if entry.get("isSecret"):
            entry["value"] = box.open(entry["value"], context).decode()
    registries = (body.get("credentials") or {}).get("customRegistries")
    if registries:
        body["credentials"]["customRegistries"] = open_credentials(registries, box, context)
    return body


def shown_request(task_run: TaskRunDoc, details: SecretBox | None) -> dict[str, Any]:
    """The stored request: secret values null, except through listDetails (`details`)."""
    if details is not None:
        return _opened(task_run, details)
    body = copy.deepcopy(task_run.runRequest)
    for entry in body.get("arguments", []) + body.get("values", []):
        if entry.get("isSecret"):
            entry["value"] = None
    for entry in ((body.get("credentials") or {}).get("customRegistries") or {}).values():
        for key in ("userName", "password"):
            secret = entry.get(key)
            if secret and secret.get("type", "Opaque") == "Opaque":
                secret["value"] = None
    return body


async def _schedule(s: Scheduler, request: AnyRunRequest) -> RunDoc:
    try:
        if isinstance(request, TaskRunRequest):
            task = await _task_of(s, request.taskId)
            return await schedule_task_run(
                s.metadata, s.blobs, s.queue, s.box, s.registry, s.login_server, task,
                agent_pool=request.agentPoolName,
            )  # fmt: skip
        return await schedule_run(s.metadata, s.blobs, s.queue, s.box, s.registry, s.login_server, request)
    except RunRequestInvalid as error:
        raise TaskRunInvalid(str(error)) from error


async def _task_of(s: Scheduler, task_id: str) -> TaskDoc:
    name = task_id.rstrip("/").rsplit("/", 1)[-1]
    task = None
    if task_id.lower().startswith(s.task_id_prefix.lower()) and "/" not in task_id[len(s.task_id_prefix) :]:
        task = await TaskStore(s.metadata).get(s.registry, name)
    if task is None:
        raise TaskRunInvalid(f"task {name[:50]!r} was not found in this registry", 404, "ResourceNotFound")
    return task


async def get_task_run(metadata: Cosmos, registry: str, name: str) -> TaskRunDoc:
    task_run = await TaskRunStore(metadata).get(registry, name) if valid_name(name) else None
    if task_run is None:
        raise TaskRunNotFound(name)
    return task_run


async def list_task_runs(metadata: Cosmos, registry: str) -> list[TaskRunDoc]:
    return await TaskRunStore(metadata).list_task_runs(registry)


async def put_task_run(s: Scheduler, name: str, location: str, body: TaskRunBody) -> tuple[TaskRunDoc, bool]:
    """Create the task run and schedule its run; on an existing one, schedule again only when the request
    or the forceUpdateTag changed (a PUT repeated as it was runs nothing)."""
    store = TaskRunStore(s.metadata)
    raw = body.properties.runRequest
    if raw is None:
        raise TaskRunInvalid("properties.runRequest is required")
    request = parse_request(raw)
    existing = await store.get(s.registry, name)
    if existing is None:
        if len(await store.list_task_runs(s.registry)) >= MAX_TASK_RUNS_PER_REGISTRY:
            raise TaskRunInvalid(f"a registry has at most {MAX_TASK_RUNS_PER_REGISTRY} task runs", 409, "QuotaExceeded")
        run = await _schedule(s, request)
        task_run = TaskRunDoc(
            id=task_run_doc_id(name),
            registry=s.registry,
            name=name,
            location=body.location or location,
            tags=body.tags or {},
            runRequest=_sealed(request, s.box, secret_context(s.registry, name)),
            forceUpdateTag=body.properties.forceUpdateTag,
            runId=run.runId,
        )
        if await store.create(task_run):
            return task_run, True
        existing = await store.get(s.registry, name)
        if existing is None:
            raise ConcurrentUpdate(name)
    return await _rerun_if_changed(s, existing, request, body), False


async def update_task_run(s: Scheduler, name: str, body: TaskRunBody) -> TaskRunDoc:
    """ACR's update: a new forceUpdateTag (or a new run request) runs it again; the same one runs nothing."""
    task_run = await get_task_run(s.metadata, s.registry, name)
    raw = body.properties.runRequest
    request = parse_request(raw) if raw is not None else None
    return await _rerun_if_changed(s, task_run, request, body)


async def _rerun_if_changed(
    s: Scheduler, task_run: TaskRunDoc, request: AnyRunRequest | None, body: TaskRunBody
) -> TaskRunDoc:
    context = secret_context(s.registry, task_run.name)
    tag = body.properties.forceUpdateTag
    new_request = request is not None and request.model_dump(mode="json", exclude_none=True) != parse_request(
        _opened(task_run, s.box)
    ).model_dump(mode="json", exclude_none=True)
    new_tag = tag is not None and tag != task_run.forceUpdateTag
    if body.tags is not None:
        task_run.tags = body.tags
    if new_request or new_tag:
        run_with = request if request is not None else parse_request(_opened(task_run, s.box))
        run = await _schedule(s, run_with)
        task_run.runId = run.runId
        task_run.runRequest = _sealed(run_with, s.box, context)
        if tag is not None:
            task_run.forceUpdateTag = tag
    return await TaskRunStore(s.metadata).replace(task_run)


async def delete_task_run(metadata: Cosmos, registry: str, name: str) -> bool:
    """Delete the task run (its runs stay); False when there was none."""
    return valid_name(name) and await TaskRunStore(metadata).delete(registry, name)
