"""Scheduling runs: the rules between the API and the queue.

    schedule_quick_build  checks the source the request names exists, takes the next run id, writes the run
                          (`dispatched: false`), sends its queue message, marks it dispatched
    relay_runs            re-sends the messages of runs written but never dispatched (the process died
                          between the write and the send, or the queue was down)
    request_cancel        a queued run is Canceled at once; a running one is flagged for its runner

Secret build arguments are sealed in the run document (services/platform/secrets.py), bound to the run.
"""

from __future__ import annotations

import base64
import binascii
import copy
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError

from services.platform.blobs import BlobStore
from services.platform.cosmos import ConcurrentUpdate, Cosmos, utcnow
from services.platform.secrets import SecretBox
from services.platform.settings import Settings
from services.tasks.gitsource import is_git_url
from services.tasks.models import (
    SOURCE_PATH,
    TERMINAL,
    DockerBuildRequest,
    EncodedTaskRunRequest,
    FileTaskRunRequest,
    RunDoc,
    RunMessage,
    RunRequest,
    SetValue,
    TaskDoc,
)
from services.tasks.pools import PoolInvalid, resolve_pool
from services.tasks.queue import RunQueue
from services.tasks.store import RunStore, run_doc_id
from services.tasks.taskfile import TaskFileInvalid, parse_task_file
from services.tasks.variables import RunVariables, VariableUnknown, render

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


def decode_text(value: str, what: str) -> str:
    try:
        return base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as error:
        raise RunRequestInvalid(f"{what} is not base64 of UTF-8 text") from error


def values_of(given: list[SetValue], values_text: str | None) -> dict[str, str]:
    """The run's `{{.Values.*}}`: the values file's (a YAML mapping), then the request's values over them."""
    import yaml

    values: dict[str, str] = {}
    if values_text:
        try:
            loaded = yaml.safe_load(values_text)
        except yaml.YAMLError as error:
            raise RunRequestInvalid("the values file is not YAML") from error
        if not isinstance(loaded, dict):
            raise RunRequestInvalid("the values file must be a mapping of names to values")
        values = {str(k): str(v) for k, v in loaded.items()}
    values.update({v.name: v.value for v in given})
    return values


def check_task_file(text: str, variables: RunVariables) -> None:
    """Refuse a task file that would fail before its first step: RunRequestInvalid naming the line."""
    try:
        parse_task_file(render(text, variables))
    except (TaskFileInvalid, VariableUnknown) as error:
        raise RunRequestInvalid(f"the task file is invalid: {error}") from error


async def schedule_run(
    metadata: Cosmos,
    blobs: BlobStore,
    queue: RunQueue,
    box: SecretBox,
    registry: str,
    login_server: str,
    request: RunRequest,
    *,
    task: str | None = None,
    timer: dict[str, str] | None = None,
    image_update: dict[str, Any] | None = None,
    source_trigger: dict[str, Any] | None = None,
    source_token: str | None = None,
    agent_pool: str | None = None,
    restricted: bool = False,
) -> RunDoc:
    """Check the request, write the run (Queued), queue it. RunRequestInvalid for a request that cannot run.

    The run waits for a slot of the agent pool the request names (`agentPoolName`), else of `agent_pool`
    (a task's); with neither it runs as soon as a runner has room.

    `source_trigger` (ACR's SourceTriggerDescriptor: commitId, branchName, ...) names the pushed commit a
    git context is fetched at; `source_token` the repository's token (sealed in the run); `restricted` marks a
    fork's pull request (the runner grants it no push and no `acr` commands)."""
    source = request.sourceLocation or ""
    if is_git_url(source):
        pass  # checked by the request model; fetched by the runner
    elif source or not isinstance(request, EncodedTaskRunRequest):
        if not SOURCE_PATH.fullmatch(source):
            raise RunRequestInvalid(
                "sourceLocation must be the relativePath that listBuildSourceUploadUrl gave, or a git URL"
            )
        if await blobs.path_size(registry, source) is None:
            raise RunRequestInvalid("nothing was uploaded to sourceLocation")
    if isinstance(request, EncodedTaskRunRequest):
        text = decode_text(request.encodedTaskContent, "encodedTaskContent")
        values_text = (
            decode_text(request.encodedValuesContent, "encodedValuesContent") if request.encodedValuesContent else None
        )
        # checked with a stand-in run id: what a run's own values cannot change
        check_task_file(
            text, RunVariables("cb0", login_server, registry, values=values_of(request.values, values_text))
        )
    try:
        pool = await resolve_pool(metadata, registry, request.agentPoolName or agent_pool)
    except PoolInvalid as error:
        raise RunRequestInvalid(str(error)) from error
    store = RunStore(metadata)
    run_id = await store.next_run_id(registry)
    body = request.model_dump(mode="json", exclude={"credentials"})
    body["agentPoolName"] = pool
    registries = request.credentials.customRegistries if request.credentials is not None else {}
    custom = seal_credentials(
        {k: v.model_dump(mode="json") for k, v in registries.items() if v is not None},
        box,
        secret_context(registry, run_id),
    )
    for entry in body.get("arguments", []) + body.get("values", []):
        if entry["isSecret"]:
            entry["value"] = box.seal(entry["value"].encode(), secret_context(registry, run_id))
    run = RunDoc(
        id=run_doc_id(run_id),
        registry=registry,
        runId=run_id,
        number=int(run_id[2:]),
        runType="QuickBuild" if isinstance(request, DockerBuildRequest) else "QuickRun",
        request=body,
        logPath=log_path(run_id),
        isArchiveEnabled=request.isArchiveEnabled,
        task=task,
        timerTrigger=timer,
        imageUpdateTrigger=image_update,
        sourceTrigger=source_trigger,
        sourceCommit=(source_trigger or {}).get("commitId"),
        sourceToken=box.seal(source_token.encode(), secret_context(registry, run_id)) if source_token else None,
        customRegistries=custom,
        agentPoolName=pool,
        restricted=restricted,
    )
    await store.create(run)
    await dispatch(store, queue, run)
    return await store.get(registry, run_id) or run


def seal_credentials(registries: dict[str, Any], box: SecretBox, context: str) -> dict[str, Any]:
    """Custom registry credentials with their Opaque values sealed (Key Vault URIs are references: kept)."""
    sealed = copy.deepcopy(registries)
    for entry in sealed.values():
        for key in ("userName", "password"):
            secret = entry.get(key)
            if secret and secret.get("type", "Opaque") == "Opaque":
                secret["value"] = box.seal(str(secret["value"]).encode(), context)
    return sealed


def open_credentials(registries: dict[str, Any], box: SecretBox, context: str) -> dict[str, Any]:
    opened = copy.deepcopy(registries)
    for entry in opened.values():
        for key in ("userName", "password"):
            secret = entry.get(key)
            if secret and secret.get("type", "Opaque") == "Opaque":
                secret["value"] = box.open(str(secret["value"]), context).decode()
    return opened


def task_secret_context(registry: str, task: str) -> str:
    return f"task:{registry}:{task.lower()}"


def task_run_request(task: TaskDoc, box: SecretBox, restricted: bool = False) -> RunRequest:
    """The run request a task's step stands for (its secret values opened, to be sealed for the run).

    `restricted` (a fork's pull request): every secret value is empty (as GitHub Actions gives a fork's
    workflow empty secrets), no other registries' credentials, and a Docker step does not push."""
    step = copy.deepcopy(task.step)  # the task's own values stay sealed
    context = step.pop("contextPath", "/dev/null")
    kind = step.pop("type")
    for entry in step.get("arguments", []) + step.get("values", []):
        if entry.get("isSecret"):
            sealed, context_of_task = entry["value"], task_secret_context(task.registry, task.name)
            entry["value"] = "" if restricted else box.open(sealed, context_of_task).decode()
    if restricted and kind == "Docker":
        step["isPushEnabled"] = False
    common: dict[str, Any] = {"timeout": task.timeout, "platform": task.platform}
    if task.credentials and task.credentials.get("customRegistries") and not restricted:
        context_of_task = task_secret_context(task.registry, task.name)
        common["credentials"] = {
            "customRegistries": open_credentials(task.credentials["customRegistries"], box, context_of_task)
        }
    if context != "/dev/null":
        common["sourceLocation"] = context
    try:
        if kind == "Docker":
            return DockerBuildRequest.model_validate(
                {"type": "DockerBuildRequest", **_fields(step, DockerBuildRequest), **common}
            )
        if kind == "EncodedTask":
            return EncodedTaskRunRequest.model_validate(
                {"type": "EncodedTaskRunRequest", **_fields(step, EncodedTaskRunRequest), **common}
            )
        return FileTaskRunRequest.model_validate(
            {"type": "FileTaskRunRequest", **_fields(step, FileTaskRunRequest), **common}
        )
    except ValidationError as error:
        raise RunRequestInvalid(f"the task's step cannot run: {error.errors()[0]['msg']}") from error


def _fields(step: dict[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    return {k: v for k, v in step.items() if k in model.model_fields and v is not None}


async def schedule_task_run(
    metadata: Cosmos,
    blobs: BlobStore,
    queue: RunQueue,
    box: SecretBox,
    registry: str,
    login_server: str,
    task: TaskDoc,
    *,
    timer: dict[str, str] | None = None,
    image_update: dict[str, Any] | None = None,
    source_trigger: dict[str, Any] | None = None,
    agent_pool: str | None = None,
    restricted: bool = False,
) -> RunDoc:
    """Run the task's step; in `agent_pool` when given (a TaskRunRequest's), else in the task's pool.
    `restricted`: a fork's pull request (services/tasks/hooks.py)."""
    request = task_run_request(task, box, restricted)
    return await schedule_run(
        metadata, blobs, queue, box, registry, login_server, request,
        task=task.name, timer=timer, image_update=image_update, source_trigger=source_trigger,
        source_token=task_source_token(task, box), agent_pool=agent_pool or task.agentPoolName,
        restricted=restricted,
    )  # fmt: skip


def task_source_token(task: TaskDoc, box: SecretBox) -> str | None:
    """The repository token of the task's source trigger (opened), when its context is a git URL."""
    if not is_git_url(str(task.step.get("contextPath", ""))):
        return None
    for trigger in task.sourceTriggers:
        auth = trigger.get("sourceRepository", {}).get("sourceControlAuthProperties") or {}
        if auth.get("token"):
            return box.open(auth["token"], task_secret_context(task.registry, task.name)).decode()
    return None


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
