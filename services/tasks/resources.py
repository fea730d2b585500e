"""Tasks as resources (`registries/{r}/tasks/{name}`): the rules of create, update, delete and their ARM shape.

A task is its step (a Docker build, an encoded task file, or a task file in its context: the fields of the
run request it becomes, services/tasks/scheduling.py task_run_request), its platform, timeout, status and
timer triggers. Secret arguments and values are stored sealed, bound to the task; they show as null except in
`listDetails`.
"""

from __future__ import annotations

import copy
import re
import secrets
from typing import Any

from services.management.arm import PROVIDER, registry_id
from services.management.authorization import ArmScope
from services.platform.cosmos import ConcurrentUpdate, Cosmos
from services.platform.secrets import SecretBox
from services.tasks.gitsource import is_git_url, normal_repository
from services.tasks.models import (
    TASK_NAME,
    Credentials,
    EncodedTaskRunRequest,
    SourceTrigger,
    TaskBody,
    TaskDoc,
    TaskStep,
)
from services.tasks.pools import PoolInvalid, resolve_pool
from services.tasks.scheduling import (
    RunRequestInvalid,
    check_task_file,
    decode_text,
    open_credentials,
    seal_credentials,
    task_run_request,
    task_secret_context,
    values_of,
)
from services.tasks.store import TaskStore, task_doc_id
from services.tasks.variables import RunVariables

MAX_TASKS_PER_REGISTRY = 1000
_NAME = re.compile(TASK_NAME)


class TaskInvalid(ValueError):
    pass


class TaskNotFound(LookupError):
    pass


def valid_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))


async def get_task(metadata: Cosmos, registry: str, name: str) -> TaskDoc | None:
    return await TaskStore(metadata).get(registry, name) if valid_name(name) else None


async def require_task(metadata: Cosmos, registry: str, name: str) -> TaskDoc:
    task = await get_task(metadata, registry, name)
    if task is None:
        raise TaskNotFound(name)
    return task


async def list_tasks(metadata: Cosmos, registry: str) -> list[TaskDoc]:
    return await TaskStore(metadata).list_tasks(registry)


async def delete_task(metadata: Cosmos, registry: str, name: str) -> bool:
    return await TaskStore(metadata).delete(registry, name)


def _sealed_step(step: TaskStep, box: SecretBox, registry: str, name: str) -> dict[str, Any]:
    body = step.model_dump(mode="json")
    for entry in body.get("arguments", []) + body.get("values", []):
        if entry["isSecret"]:
            entry["value"] = box.seal(entry["value"].encode(), task_secret_context(registry, name))
    return body


def _sealed_source_triggers(task: TaskDoc, triggers: list[SourceTrigger], box: SecretBox) -> list[dict[str, Any]]:
    """The triggers as stored: each with its push hook's secret (made once, kept while the trigger keeps its
    name) and the repository token, both sealed to the task. A token left out keeps the one stored."""
    context = task_secret_context(task.registry, task.name)
    before = {t["name"]: t for t in task.sourceTriggers}
    sealed: list[dict[str, Any]] = []
    for trigger in triggers:
        body = trigger.model_dump(mode="json")
        old = before.get(trigger.name)
        auth = body["sourceRepository"].get("sourceControlAuthProperties")
        if auth is not None:
            auth["token"] = box.seal(auth["token"].encode(), context)
            if auth.get("refreshToken"):
                auth["refreshToken"] = box.seal(auth["refreshToken"].encode(), context)
        elif old is not None:
            body["sourceRepository"]["sourceControlAuthProperties"] = old["sourceRepository"].get(
                "sourceControlAuthProperties"
            )
        body["webhookSecret"] = (
            old["webhookSecret"] if old is not None else box.seal(secrets.token_hex(32).encode(), context)
        )
        sealed.append(body)
    return sealed


def _merged_credentials(task: TaskDoc, credentials: Credentials, box: SecretBox) -> dict[str, Any] | None:
    """ACR's update of `credentials.customRegistries`: each login server given replaces its entry, one given
    as null removes it, the others stay. Opaque values are sealed to the task."""
    registries = dict((task.credentials or {}).get("customRegistries") or {})
    context = task_secret_context(task.registry, task.name)
    for server, entry in credentials.customRegistries.items():
        if entry is None:
            registries.pop(server, None)
        else:
            registries.update(seal_credentials({server: entry.model_dump(mode="json")}, box, context))
    source = credentials.sourceRegistry.model_dump(mode="json") if credentials.sourceRegistry else None
    if not registries and source is None:
        return None
    return {"customRegistries": registries, "sourceRegistry": source}


def _shown_credentials(task: TaskDoc, details: SecretBox | None) -> dict[str, Any] | None:
    """The task's credentials: Opaque values null, except through listDetails; Key Vault URIs as given."""
    if not task.credentials:
        return None
    registries = task.credentials.get("customRegistries") or {}
    if details is not None:
        registries = open_credentials(registries, details, task_secret_context(task.registry, task.name))
    else:
        registries = copy.deepcopy(registries)
        for entry in registries.values():
            for key in ("userName", "password"):
                if entry.get(key) and entry[key].get("type", "Opaque") == "Opaque":
                    entry[key]["value"] = None
    return {"customRegistries": registries, "sourceRegistry": task.credentials.get("sourceRegistry")}


def hook_path(registry: str, task: str) -> str:
    """The task's push hook (services/tasks/hooks.py), relative to the service's base URL."""
    return f"/tasks/hooks/{registry}/{task}"


def _apply(task: TaskDoc, body: TaskBody, box: SecretBox) -> None:
    p = body.properties
    if body.location is not None:
        task.location = body.location
    if body.tags is not None:
        task.tags = body.tags
    if p.status is not None:
        task.status = p.status
    if p.platform is not None:
        task.platform = p.platform.model_dump(mode="json", exclude_none=True)
    if p.timeout is not None:
        task.timeout = p.timeout
    if p.step is not None:
        task.step = _sealed_step(p.step, box, task.registry, task.name)
    if p.credentials is not None:
        task.credentials = _merged_credentials(task, p.credentials, box)
    if p.trigger is not None:
        given = p.trigger.model_fields_set  # each kind of trigger left out of the body stays as it was
        if "sourceTriggers" in given:
            task.sourceTriggers = _sealed_source_triggers(task, p.trigger.sourceTriggers, box)
        if "timerTriggers" in given:
            task.timerTriggers = [t.model_dump(mode="json") for t in p.trigger.timerTriggers]
            task.hasTimers = bool(task.timerTriggers)
        if "baseImageTrigger" in given:
            trigger = p.trigger.baseImageTrigger
            task.baseImageTrigger = trigger.model_dump(mode="json") if trigger is not None else None
            task.hasBaseTrigger = trigger is not None
    if task.sourceTriggers:
        context = str(task.step.get("contextPath", ""))
        if not is_git_url(context):
            raise TaskInvalid("a source trigger needs the step's contextPath to be the repository's git URL")
        for source in task.sourceTriggers:
            if normal_repository(source["sourceRepository"]["repositoryUrl"]) != normal_repository(context):
                raise TaskInvalid("the source trigger's repositoryUrl must be the repository of the contextPath")
    if task.baseImageTrigger is not None and task.step.get("type") != "Docker":
        raise TaskInvalid("a base image trigger needs a Docker step (its FROM lines name the base images)")
    try:  # a task that could never run is refused now, not at its first run
        request = task_run_request(task, box)
        if isinstance(request, EncodedTaskRunRequest):
            text = decode_text(request.encodedTaskContent, "encodedTaskContent")
            encoded = request.encodedValuesContent
            values = values_of(request.values, decode_text(encoded, "encodedValuesContent") if encoded else None)
            check_task_file(text, RunVariables("cb0", "registry.invalid", task.registry, values=values))
    except RunRequestInvalid as error:
        raise TaskInvalid(str(error)) from error


async def put_task(metadata: Cosmos, box: SecretBox, registry: str, name: str, body: TaskBody) -> tuple[TaskDoc, bool]:
    store = TaskStore(metadata)
    existing = await store.get(registry, name)
    if existing is None:
        if body.location is None:
            raise TaskInvalid("location is required")
        if body.properties.step is None:
            raise TaskInvalid("properties.step is required")
        if len(await store.list_tasks(registry)) >= MAX_TASKS_PER_REGISTRY:
            raise TaskInvalid(f"a registry has at most {MAX_TASKS_PER_REGISTRY} tasks")
        task = TaskDoc(id=task_doc_id(name), registry=registry, name=name, location=body.location, step={})
        _apply(task, body, box)
        await _apply_pool(metadata, task, body)
        if await store.create(task):
            return task, True
        existing = await store.get(registry, name)
        if existing is None:
            raise ConcurrentUpdate(name)
    _apply(existing, body, box)
    await _apply_pool(metadata, existing, body)
    return await store.replace(existing), False


async def update_task(metadata: Cosmos, box: SecretBox, registry: str, name: str, body: TaskBody) -> TaskDoc:
    store = TaskStore(metadata)
    task = await store.get(registry, name)
    if task is None:
        raise TaskNotFound(name)
    if body.properties.step is not None and body.properties.step.type != task.step.get("type"):
        raise TaskInvalid("a task's step type cannot change")
    _apply(task, body, box)
    await _apply_pool(metadata, task, body)
    return await store.replace(task)


async def _apply_pool(metadata: Cosmos, task: TaskDoc, body: TaskBody) -> None:
    """`agentPoolName`: a pool of the registry (its runs wait for it), "" for none; left out: unchanged."""
    name = body.properties.agentPoolName
    if name is None:
        return
    try:
        task.agentPoolName = await resolve_pool(metadata, task.registry, name)
    except PoolInvalid as error:
        raise TaskInvalid(str(error)) from error


_STEP_TYPES = {"Docker": "Docker", "EncodedTask": "EncodedTask", "FileTask": "FileTask"}


def _shown_source_triggers(task: TaskDoc, base_url: str, details: SecretBox | None) -> list[dict[str, Any]]:
    """ACR's SourceTrigger, plus ours: `webhookUrl` (where GitHub or Gitea sends its push events) and
    `webhookSecret` (their HMAC key); the secret and token only through listDetails, else null."""
    context = task_secret_context(task.registry, task.name)
    shown: list[dict[str, Any]] = []
    for trigger in task.sourceTriggers:
        entry = copy.deepcopy(trigger)
        auth = entry["sourceRepository"].get("sourceControlAuthProperties")
        for key in ("token", "refreshToken"):
            if auth and auth.get(key):
                auth[key] = details.open(auth[key], context).decode() if details is not None else None
        entry.setdefault("pullRequestForks", "Restricted")  # triggers stored before the field existed
        secret = entry.pop("webhookSecret")
        entry["webhookUrl"] = base_url + hook_path(task.registry, task.name)
        entry["webhookSecret"] = details.open(secret, context).decode() if details is not None else None
        shown.append(entry)
    return shown


def task_resource(
    task: TaskDoc, scope: ArmScope, registry: str, details: SecretBox | None = None, base_url: str = ""
) -> dict[str, Any]:
    step = dict(task.step)
    for key in ("arguments", "values"):
        entries = []
        for entry in step.get(key, []):
            shown = dict(entry)
            if entry.get("isSecret"):
                context = task_secret_context(task.registry, task.name)
                shown["value"] = details.open(entry["value"], context).decode() if details is not None else None
            entries.append(shown)
        step[key] = entries
    return {
        "id": f"{registry_id(scope, registry)}/tasks/{task.name}",
        "name": task.name,
        "type": f"{PROVIDER}/registries/tasks",
        "location": task.location,
        "tags": task.tags,
        "properties": {
            "provisioningState": "Succeeded",
            "creationDate": task.creationDate,
            "status": task.status,
            "platform": task.platform,
            "agentConfiguration": {"cpu": 2},
            "timeout": task.timeout,
            "step": step,
            "trigger": {
                "timerTriggers": task.timerTriggers,
                "sourceTriggers": _shown_source_triggers(task, base_url, details),
                "baseImageTrigger": task.baseImageTrigger,
            },
            "credentials": _shown_credentials(task, details),
            "isSystemTask": False,
            **({"agentPoolName": task.agentPoolName} if task.agentPoolName else {}),
        },
    }
