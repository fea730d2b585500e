"""The ARM-shaped API of ACR Tasks' runs, as `azure-mgmt-containerregistrytasks` 1.0.0b1 speaks it
(api-version 2025-03-01-preview):

    POST  .../registries/{registry}/listBuildSourceUploadUrl   a write-only SAS URL for a .tar.gz context
    POST  .../registries/{registry}/scheduleRun                a DockerBuildRequest -> the queued Run (200)
    GET   .../registries/{registry}/runs[?$top=]               the runs, newest first
    GET   .../registries/{registry}/runs/{runId}               one run
    PATCH .../registries/{registry}/runs/{runId}               isArchiveEnabled
    POST  .../registries/{registry}/runs/{runId}/cancel        queued: Canceled at once; running: stopped
    POST  .../registries/{registry}/runs/{runId}/listLogSasUrl a read-only SAS URL of the run's log

Every call is authorized first (arm.py). The rules live in services/tasks/scheduling.py, the documents in
services/tasks/store.py, the execution in services/tasks/runner.py.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse, Response

from services.management.arm import PROVIDER, ArmCall, ArmError, registry_id, registry_in_scope
from services.management.authorization import Access, ArmScope
from services.platform.secrets import SecretBox, secret_box
from services.platform.settings import Settings
from services.tasks import resources as task_resources
from services.tasks.models import (
    DockerBuildRequest,
    EncodedTaskRunRequest,
    FileTaskRunRequest,
    RunDoc,
    RunUpdate,
    TaskBody,
    TaskRunRequest,
)
from services.tasks.scheduling import (
    RunNotFound,
    RunRequestInvalid,
    new_source_path,
    request_cancel,
    schedule_run,
    schedule_task_run,
)
from services.tasks.store import RunStore

_REGISTRY = (
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.ContainerRegistry"
    r"/registries/(?P<registry>[^/]+)"
)
REGISTRY_ACTION_PATH = re.compile(_REGISTRY + r"/(?P<action>listBuildSourceUploadUrl|scheduleRun)/?$", re.I)
RUN_PATH = re.compile(
    _REGISTRY + r"/runs(?:/(?P<run>[^/]+)(?:/(?P<action>cancel|listLogSasUrl))?)?/?$",
    re.I,
)
TASK_PATH = re.compile(_REGISTRY + r"/tasks(?:/(?P<task>[^/]+)(?:/(?P<action>listDetails))?)?/?$", re.I)
RUN_ID = re.compile(r"^[a-z]{2}[0-9]{1,10}$")
SOURCE_URL_SECONDS = 3600  # ACR's upload URLs last an hour


REQUEST_TYPES: dict[str, type[DockerBuildRequest | EncodedTaskRunRequest | FileTaskRunRequest]] = {
    "DockerBuildRequest": DockerBuildRequest,
    "EncodedTaskRunRequest": EncodedTaskRunRequest,
    "FileTaskRunRequest": FileTaskRunRequest,
}


class RunRequestType(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str = Field(max_length=64)


def _box(settings: Settings) -> SecretBox:
    return secret_box(settings.secrets_keys, settings.secrets_keys_file)


def run_resource(run: RunDoc, scope: ArmScope) -> dict[str, Any]:
    request = run.request
    platform = request.get("platform") or {"os": "Linux"}
    properties: dict[str, Any] = {
        "runId": run.runId,
        "status": run.status,
        "lastUpdatedTime": run.lastUpdatedTime,
        "runType": run.runType,
        "createTime": run.createTime,
        "outputImages": run.outputImages,
        "platform": {k: v for k, v in platform.items() if v is not None},
        "provisioningState": "Succeeded",
        "isArchiveEnabled": run.isArchiveEnabled,
        "agentConfiguration": {"cpu": 2},
        # ours: the base images the build pulled, with their digests; whether a cancel was asked for
        "baseImages": run.baseImages,
        "cancelRequested": run.cancelRequested,
    }
    if run.task:
        properties["task"] = run.task
    if run.timerTrigger:
        properties["timerTrigger"] = run.timerTrigger
    if run.imageUpdateTrigger:
        properties["imageUpdateTrigger"] = run.imageUpdateTrigger
    if run.sourceTrigger:
        properties["sourceTrigger"] = run.sourceTrigger
    if run.restricted:
        properties["restricted"] = True  # ours: a fork's pull request ran without secrets or push rights
    if run.logExpired:
        properties["logExpired"] = True  # ours: the log was deleted after TASKS_LOG_RETENTION_DAYS
        properties["logExpiredTime"] = run.logExpiredTime
    if run.agentPoolName:
        properties["agentPoolName"] = run.agentPoolName
    if run.sourceCommit:
        properties["sourceCommit"] = run.sourceCommit  # ours: the commit a git context was fetched at
    for key in ("startTime", "finishTime", "runErrorMessage"):
        value = getattr(run, key)
        if value is not None:
            properties[key] = value
    return {
        "id": f"{registry_id(scope, run.registry)}/runs/{run.runId}",
        "name": run.runId,
        "type": f"{PROVIDER}/registries/runs",
        "properties": properties,
    }


async def registry_actions(call: ArmCall) -> Response:
    scope = call.scope()
    action = call.match["action"].lower()
    if call.request.method != "POST":
        raise ArmError(405, "MethodNotAllowed", f"{call.match['action']} takes POST")
    operation = "listBuildSourceUploadUrl" if action == "listbuildsourceuploadurl" else "scheduleRun"
    await call.authorize(scope, "write", f"registries/{operation}/action")
    doc = await registry_in_scope(call, scope)
    registry = doc.registry
    blobs = call.services.blobs
    if action == "listbuildsourceuploadurl":
        path = new_source_path()
        url = await blobs.path_url(registry, path, SOURCE_URL_SECONDS, write=True)
        return JSONResponse({"uploadUrl": url, "relativePath": path})
    kind = await call.body(RunRequestType)
    if kind.type == "TaskRunRequest":
        task_request = await call.body(TaskRunRequest)
        name = task_request.taskId.rstrip("/").rsplit("/", 1)[-1]
        task = await task_resources.get_task(call.services.metadata, registry, name)
        if task is None or not task_request.taskId.lower().startswith(registry_id(scope, registry).lower() + "/tasks/"):
            raise ArmError(404, "ResourceNotFound", f"task {name[:50]!r} was not found", target="taskId")
        try:
            run = await schedule_task_run(
                call.services.metadata, blobs, call.services.runs, _box(call.services.settings), registry,
                doc.loginServer, task, agent_pool=task_request.agentPoolName,
            )  # fmt: skip
        except RunRequestInvalid as error:
            raise ArmError(400, "InvalidRequestContent", str(error)) from error
        return JSONResponse(run_resource(run, scope))
    model = REQUEST_TYPES.get(kind.type)
    if model is None:
        raise ArmError(400, "InvalidRequestContent", f"run requests of type {kind.type[:64]!r} are not supported")
    request = await call.body(model)
    try:
        run = await schedule_run(
            call.services.metadata,
            blobs,
            call.services.runs,
            _box(call.services.settings),
            registry,
            doc.loginServer,
            request,
        )
    except RunRequestInvalid as error:
        raise ArmError(400, "InvalidRequestContent", str(error)) from error
    return JSONResponse(run_resource(run, scope))


async def runs(call: ArmCall) -> Response:
    scope = call.scope()
    run_id, action, method = call.match["run"], call.match["action"], call.request.method
    access: Access = "read" if method == "GET" and action is None else "write"
    if action is not None:
        operation = f"registries/runs/{action}/action"
    else:
        operation = "registries/runs/" + ("read" if access == "read" else "write")
    await call.authorize(scope, access, operation)
    registry = (await registry_in_scope(call, scope)).registry
    store = RunStore(call.services.metadata)
    if run_id is None:
        if method != "GET":
            raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed on a run list")
        top = _top(call.request.query_params.get("$top"))
        task = _task_filter(call.request.query_params.get("$filter"))
        found = await store.list_runs(registry, top, task)
        return JSONResponse({"value": [run_resource(r, scope) for r in found]})
    if not RUN_ID.fullmatch(run_id):
        raise ArmError(404, "ResourceNotFound", "the run was not found")
    if action is not None and method != "POST":
        raise ArmError(405, "MethodNotAllowed", f"{action} takes POST")
    if action == "cancel":
        try:
            await request_cancel(call.services.metadata, registry, run_id)
        except RunNotFound as error:
            raise ArmError(404, "ResourceNotFound", f"run {run_id} was not found") from error
        return Response(status_code=200)
    run = await store.get(registry, run_id)
    if run is None:
        raise ArmError(404, "ResourceNotFound", f"run {run_id} was not found")
    if action == "listLogSasUrl":
        days = call.services.settings.tasks_log_retention_days
        if run.logExpired:
            raise ArmError(404, "ResourceNotFound", f"the log of run {run_id} expired after {days} days")
        link = await call.services.blobs.path_url(registry, run.logPath, min(days * 86400, 7 * 86400))
        return JSONResponse({"logLink": link, "logArtifactLink": None})
    if method == "GET":
        return JSONResponse(run_resource(run, scope))
    if method == "PATCH":
        update = await call.body(RunUpdate)
        if update.isArchiveEnabled is not None:
            await store.patch(registry, run_id, {"isArchiveEnabled": update.isArchiveEnabled})
            run.isArchiveEnabled = update.isArchiveEnabled
        return JSONResponse(run_resource(run, scope))
    raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed on a run")


_TASK_FILTER = re.compile(r"^\s*TaskName\s+eq\s+'([A-Za-z0-9_-]{1,50})'\s*$")


def _task_filter(text: str | None) -> str | None:
    """`$filter=TaskName eq 'name'` (the one filter `az acr task list-runs` sends); others are refused."""
    if text is None:
        return None
    match = _TASK_FILTER.match(text)
    if match is None:
        raise ArmError(400, "InvalidQueryParameterValue", "$filter supports TaskName eq '<name>' only")
    return match.group(1)


def _top(text: str | None) -> int:
    if text is None:
        return 100
    try:
        value = int(text)
    except ValueError as error:
        raise ArmError(400, "InvalidQueryParameterValue", "$top must be a whole number") from error
    if not 1 <= value <= 1000:
        raise ArmError(400, "InvalidQueryParameterValue", "$top must be between 1 and 1000")
    return value


# --- tasks ----------------------------------------------------------------------------------------------------
async def tasks(call: ArmCall) -> Response:
    scope = call.scope()
    name, action, method = call.match["task"], call.match["action"], call.request.method
    access: Access = "read" if method == "GET" else "write"
    if action is not None:
        operation = "registries/tasks/listDetails/action"
    else:
        operation = "registries/tasks/" + ("read" if method == "GET" else "delete" if method == "DELETE" else "write")
    await call.authorize(scope, access, operation)
    registry = (await registry_in_scope(call, scope)).registry
    metadata = call.services.metadata
    box = _box(call.services.settings)
    if name is None:
        if method != "GET":
            raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed on a task list")
        found = await task_resources.list_tasks(metadata, registry)
        return JSONResponse(
            {"value": [task_resources.task_resource(t, scope, registry, base_url=call.base_url()) for t in found]}
        )
    if not task_resources.valid_name(name):
        raise ArmError(404, "ResourceNotFound", "the task was not found")
    try:
        if action is not None:
            if method != "POST":
                raise ArmError(405, "MethodNotAllowed", "listDetails takes POST")
            task = await task_resources.require_task(metadata, registry, name)
            return JSONResponse(
                task_resources.task_resource(task, scope, registry, details=box, base_url=call.base_url())
            )
        if method == "GET":
            task = await task_resources.require_task(metadata, registry, name)
            return JSONResponse(task_resources.task_resource(task, scope, registry, base_url=call.base_url()))
        if method == "DELETE":
            deleted = await task_resources.delete_task(metadata, registry, name)
            return Response(status_code=200 if deleted else 204)
        if method in ("PUT", "PATCH"):
            body = await call.body(TaskBody)
            if method == "PUT":
                task, created = await task_resources.put_task(metadata, box, registry, name, body)
                return JSONResponse(
                    task_resources.task_resource(task, scope, registry, base_url=call.base_url()),
                    status_code=201 if created else 200,
                )
            task = await task_resources.update_task(metadata, box, registry, name, body)
            return JSONResponse(task_resources.task_resource(task, scope, registry, base_url=call.base_url()))
    except task_resources.TaskInvalid as error:
        raise ArmError(400, "InvalidRequestContent", str(error)) from error
    except task_resources.TaskNotFound as error:
        raise ArmError(404, "ResourceNotFound", f"task {name} was not found") from error
    raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed on a task")
