"""The ARM-shaped API of ACR Tasks' agent pools and task runs, as `azure-mgmt-containerregistrytasks` 1.0.0b1
speaks them (api-version 2025-03-01-preview):

    PUT    .../registries/{r}/agentPools/{pool}                  create (201) or scale/retag (200): long-running in
                                                                 ARM; done at once here (provisioningState
                                                                 Succeeded in the answer ends the SDK's poller)
    GET    .../registries/{r}/agentPools[/{pool}]                the pools / one pool
    PATCH  .../registries/{r}/agentPools/{pool}                  count, tags (200)
    DELETE .../registries/{r}/agentPools/{pool}                  202 with Location/Azure-AsyncOperation (a finished
                                                                 operation), 204 when there is none; 409 while runs
                                                                 are queued for it or running in it
    POST   .../registries/{r}/agentPools/{pool}/listQueueStatus  {"count": runs queued for the pool}
    PUT    .../registries/{r}/taskRuns/{name}                    create and schedule its run (201), or update (200)
    GET    .../registries/{r}/taskRuns[/{name}]                  the task runs / one, with its latest run fresh
    PATCH  .../registries/{r}/taskRuns/{name}                    a new forceUpdateTag runs it again (200)
    DELETE .../registries/{r}/taskRuns/{name}                    200 (204 when there is none); its runs stay
    POST   .../registries/{r}/taskRuns/{name}/listDetails        as GET, with the request's secret values

Roles as for tasks: Reader and up read, Contributor and Owner write. The rules live in services/tasks/pools.py
and services/tasks/taskruns.py, the documents in services/tasks/store.py.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.responses import JSONResponse, Response

from services.management.arm import PROVIDER, ArmCall, ArmError, registry_id, registry_in_scope
from services.management.authorization import Access, ArmScope
from services.management.registries_api import finished_operation, operation_urls
from services.management.tasks_api import run_resource
from services.platform.secrets import SecretBox, secret_box
from services.tasks import pools, taskruns
from services.tasks.models import AgentPoolBody, AgentPoolDoc, AgentPoolUpdate, TaskRunBody, TaskRunDoc
from services.tasks.store import RunStore

_REGISTRY = (
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.ContainerRegistry"
    r"/registries/(?P<registry>[^/]+)"
)
AGENT_POOL_PATH = re.compile(_REGISTRY + r"/agentPools(?:/(?P<pool>[^/]+)(?:/(?P<action>listQueueStatus))?)?/?$", re.I)
TASK_RUN_PATH = re.compile(_REGISTRY + r"/taskRuns(?:/(?P<taskrun>[^/]+)(?:/(?P<action>listDetails))?)?/?$", re.I)


def _box(call: ArmCall) -> SecretBox:
    settings = call.services.settings
    return secret_box(settings.secrets_keys, settings.secrets_keys_file)


def _operation(method: str, action: str | None, kind: str) -> tuple[Access, str]:
    if action is not None:
        return "write", f"registries/{kind}/{action}/action"
    if method == "GET":
        return "read", f"registries/{kind}/read"
    return "write", f"registries/{kind}/" + ("delete" if method == "DELETE" else "write")


# --- agent pools ---------------------------------------------------------------------------------------------
def pool_resource(pool: AgentPoolDoc, scope: ArmScope) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "count": pool.count,
        "tier": pool.tier,
        "os": pool.os,
        "provisioningState": "Succeeded",
    }
    if pool.virtualNetworkSubnetResourceId:
        properties["virtualNetworkSubnetResourceId"] = pool.virtualNetworkSubnetResourceId
    return {
        "id": f"{registry_id(scope, pool.registry)}/agentPools/{pool.name}",
        "name": pool.name,
        "type": f"{PROVIDER}/registries/agentPools",
        "location": pool.location,
        "tags": pool.tags,
        "systemData": {"createdAt": pool.creationDate},
        "properties": properties,
    }


def _pool_error(error: pools.PoolInvalid) -> ArmError:
    return ArmError(error.status, error.code, str(error), target=error.target)


async def agent_pools(call: ArmCall) -> Response:
    scope = call.scope()
    name, action, method = call.match["pool"], call.match["action"], call.request.method
    access, operation = _operation(method, action, "agentPools")
    principal = await call.authorize(scope, access, operation)
    registry = await registry_in_scope(call, scope)
    metadata, settings = call.services.metadata, call.services.settings
    if name is None:
        if method != "GET":
            raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed on an agent pool list")
        found = await pools.list_pools(metadata, registry.registry)
        return JSONResponse({"value": [pool_resource(p, scope) for p in found]})
    if not pools.valid_name(name):
        raise ArmError(
            400 if method == "PUT" else 404,
            "InvalidResourceName" if method == "PUT" else "ResourceNotFound",
            "agent pool names have 3 to 20 letters, digits and hyphens"
            if method == "PUT"
            else "the agent pool was not found",
        )
    try:
        if action is not None:
            if method != "POST":
                raise ArmError(405, "MethodNotAllowed", "listQueueStatus takes POST")
            pool = await pools.require_pool(metadata, registry.registry, name)
            return JSONResponse({"count": await pools.queued_runs(metadata, registry.registry, pool)})
        if method == "GET":
            return JSONResponse(pool_resource(await pools.require_pool(metadata, registry.registry, name), scope))
        if method == "PUT":
            body = await call.body(AgentPoolBody)
            pool, created = await pools.put_pool(
                metadata, settings, registry.registry, registry.sku, registry.location, name, body
            )
            return JSONResponse(pool_resource(pool, scope), status_code=201 if created else 200)
        if method == "PATCH":
            update = await call.body(AgentPoolUpdate)
            return JSONResponse(
                pool_resource(await pools.update_pool(metadata, settings, registry.registry, name, update), scope)
            )
        if method == "DELETE":
            if not await pools.delete_pool(metadata, registry.registry, name):
                return Response(status_code=204)
            done = await finished_operation(call, "delete", registry, principal.object_id)
            return Response(status_code=202, headers=operation_urls(call, done, registry.location))
    except pools.PoolInvalid as error:
        raise _pool_error(error) from error
    except pools.PoolNotFound as error:
        raise ArmError(404, "ResourceNotFound", f"agent pool {name} was not found") from error
    raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed on an agent pool")


# --- task runs -----------------------------------------------------------------------------------------------
async def task_run_resource(
    call: ArmCall, task_run: TaskRunDoc, scope: ArmScope, details: SecretBox | None = None
) -> dict[str, Any]:
    run = await RunStore(call.services.metadata).get(task_run.registry, task_run.runId)
    properties: dict[str, Any] = {
        "provisioningState": "Succeeded",
        "runRequest": taskruns.shown_request(task_run, details),
        "forceUpdateTag": task_run.forceUpdateTag,
    }
    if run is not None:
        properties["runResult"] = run_resource(run, scope)
    return {
        "id": f"{registry_id(scope, task_run.registry)}/taskRuns/{task_run.name}",
        "name": task_run.name,
        "type": f"{PROVIDER}/registries/taskRuns",
        "location": task_run.location,
        "tags": task_run.tags,
        "systemData": {"createdAt": task_run.creationDate},
        "properties": properties,
    }


async def task_runs(call: ArmCall) -> Response:
    scope = call.scope()
    name, action, method = call.match["taskrun"], call.match["action"], call.request.method
    access, operation = _operation(method, action, "taskRuns")
    await call.authorize(scope, access, operation)
    registry = await registry_in_scope(call, scope)
    metadata = call.services.metadata
    if name is None:
        if method != "GET":
            raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed on a task run list")
        found = await taskruns.list_task_runs(metadata, registry.registry)
        return JSONResponse({"value": [await task_run_resource(call, t, scope) for t in found]})
    if not taskruns.valid_name(name):
        if method == "PUT":
            raise ArmError(
                400, "InvalidResourceName", "task run names have 5 to 50 letters, digits, hyphens and underscores"
            )
        raise ArmError(404, "ResourceNotFound", "the task run was not found")
    scheduler = taskruns.Scheduler(
        metadata,
        call.services.blobs,
        call.services.runs,
        _box(call),
        registry.registry,
        registry.loginServer,
        registry_id(scope, registry.registry) + "/tasks/",
    )
    try:
        if action is not None:
            if method != "POST":
                raise ArmError(405, "MethodNotAllowed", "listDetails takes POST")
            task_run = await taskruns.get_task_run(metadata, registry.registry, name)
            return JSONResponse(await task_run_resource(call, task_run, scope, details=scheduler.box))
        if method == "GET":
            task_run = await taskruns.get_task_run(metadata, registry.registry, name)
            return JSONResponse(await task_run_resource(call, task_run, scope))
        if method == "PUT":
            body = await call.body(TaskRunBody)
            task_run, created = await taskruns.put_task_run(scheduler, name, registry.location, body)
            return JSONResponse(await task_run_resource(call, task_run, scope), status_code=201 if created else 200)
        if method == "PATCH":
            body = await call.body(TaskRunBody)
            task_run = await taskruns.update_task_run(scheduler, name, body)
            return JSONResponse(await task_run_resource(call, task_run, scope))
        if method == "DELETE":
            deleted = await taskruns.delete_task_run(metadata, registry.registry, name)
            return Response(status_code=200 if deleted else 204)
    except taskruns.TaskRunInvalid as error:
        raise ArmError(error.status, error.code, str(error)) from error
    except taskruns.TaskRunNotFound as error:
        raise ArmError(404, "ResourceNotFound", f"task run {name} was not found") from error
    raise ArmError(405, "MethodNotAllowed", f"{method} is not allowed on a task run")
