"""The task runs' documents and queries.

    registries [/registry]  task:<name>              {type: "task", registry, name, status, step, timerTriggers,
                                                     ...}: a task (services/tasks/models.py)
                            timerFired:<task>:<trigger>:<minute>  a timer's firing, claimed once (triggers.py)
                            runCounter               {type: "runCounter", registry, next}: the next run
                                                     number (cb1, cb2, ...), taken under its ETag
                            run:<run id>             {type: "run", registry, runId, status, request,
                                                     dispatched, cancelRequested, outputImages, baseImages,
                                                     logPath, agentPoolName, ... }: one run
                                                     (services/tasks/models.py)
                            agentPool:<name>         {type: "agentPool", registry, name, tier, count, os,
                                                     running: [run ids holding its slots], ...}
                            taskRun:<name>           {type: "taskRun", registry, name, runRequest (secrets
                                                     sealed), forceUpdateTag, runId: its latest run}

A run is written `dispatched: false` and its queue message sent after; `dispatched` is then set. The relay
(services/tasks/functions.py) re-sends the message of a queued run still undispatched a few seconds later:
the process may have died between the write and the send. The runner claims a run by moving it from
Queued to Running under its ETag, so a message delivered twice runs it once.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, cast

from services.platform.cosmos import ConcurrentUpdate, Cosmos, Document
from services.tasks.models import AgentPoolDoc, RunDoc, TaskDoc, TaskRunDoc

CONTAINER = "registries"


class RunCounterDoc(Document):
    registry: str
    type: str = "runCounter"
    next: int = 1


def run_doc_id(run_id: str) -> str:
    return f"run:{run_id}"


class RunStore:
    def __init__(self, cosmos: Cosmos) -> None:
        self._cosmos = cosmos

    async def next_run_id(self, registry: str) -> str:
        """`cb1`, `cb2`, ...: the registry's next run id (a number is never given twice; one may be skipped
        when the process dies before its run is written)."""
        for _ in range(50):
            raw = await self._cosmos.read(CONTAINER, "runCounter", registry)
            if raw is None:
                counter = RunCounterDoc(id="runCounter", registry=registry, next=2)
                if await self._cosmos.create(CONTAINER, counter) is not None:
                    return "cb1"
                continue
            counter = RunCounterDoc.model_validate(raw)
            number = counter.next
            counter.next += 1
            try:
                await self._cosmos.replace(CONTAINER, counter)
            except ConcurrentUpdate:
                continue
            return f"cb{number}"
        raise ConcurrentUpdate("runCounter")

    async def create(self, run: RunDoc) -> None:
        if await self._cosmos.create(CONTAINER, run) is None:
            raise ConcurrentUpdate(run.id)

    async def get(self, registry: str, run_id: str) -> RunDoc | None:
        raw = await self._cosmos.read(CONTAINER, run_doc_id(run_id), registry)
        return RunDoc.model_validate(raw) if raw is not None else None

    async def replace(self, run: RunDoc) -> RunDoc:
        """Write the run back if nobody changed it since it was read (ConcurrentUpdate otherwise)."""
        return RunDoc.model_validate(await self._cosmos.replace(CONTAINER, run))

    async def patch(self, registry: str, run_id: str, values: dict[str, Any]) -> bool:
        operations = [{"op": "set", "path": f"/{key}", "value": value} for key, value in values.items()]
        return await self._cosmos.patch(CONTAINER, run_doc_id(run_id), registry, operations)

    async def list_runs(self, registry: str, limit: int, task: str | None = None) -> list[RunDoc]:
        """The registry's runs (of one task), newest first."""
        sql = "SELECT * FROM c WHERE c.registry = @r AND c.type = 'run'"
        params: dict[str, Any] = {"@r": registry}
        if task is not None:
            sql += " AND c.task = @t"
            params["@t"] = task
        sql += " ORDER BY c.number DESC"
        found: list[RunDoc] = []
        async for item in self._cosmos.query(CONTAINER, sql, params, registry, page=min(limit, 100)):
            found.append(RunDoc.model_validate(item))
            if len(found) >= limit:
                break
        return found

    async def with_expiring_logs(
        self, finished_before: str, limit: int = 500, registries: Collection[str] | None = None
    ) -> list[RunDoc]:
        """Finished runs whose log is still kept and which ended before `finished_before` (cross-partition:
        the retention timer's query), of `registries` only when given."""
        sql = (
            "SELECT * FROM c WHERE c.type = 'run' AND c.finishTime != null AND c.finishTime < @before "
            "AND (NOT IS_DEFINED(c.logExpired) OR c.logExpired = false)"
        )
        params: dict[str, Any] = {"@before": finished_before}
        if registries is not None:
            sql += " AND ARRAY_CONTAINS(@rs, c.registry)"
            params["@rs"] = sorted(registries)
        found: list[RunDoc] = []
        async for item in self._cosmos.query_across(CONTAINER, sql, params, limit):
            found.append(RunDoc.model_validate(item))
            if len(found) >= limit:
                break
        return found

    async def count_in_pool(self, registry: str, pool: str, statuses: Collection[str]) -> int:
        """How many of the registry's runs for agent pool `pool` are in one of `statuses` (its partition)."""
        sql = (
            "SELECT VALUE COUNT(1) FROM c WHERE c.registry = @r AND c.type = 'run' AND c.agentPoolName = @p "
            "AND ARRAY_CONTAINS(@s, c.status)"
        )
        params: dict[str, Any] = {"@r": registry, "@p": pool, "@s": sorted(statuses)}
        async for value in self._cosmos.query(CONTAINER, sql, params, registry):
            return int(cast(Any, value))
        return 0

    async def undispatched(self, created_before: str, limit: int = 100) -> list[RunDoc]:
        """Queued runs whose queue message may never have been sent (cross-partition: the relay's query)."""
        sql = (
            "SELECT * FROM c WHERE c.type = 'run' AND c.status = 'Queued' AND c.dispatched = false "
            "AND c.createTime < @before"
        )
        found: list[RunDoc] = []
        async for item in self._cosmos.query_across(CONTAINER, sql, {"@before": created_before}, limit):
            found.append(RunDoc.model_validate(item))
            if len(found) >= limit:
                break
        return found


def task_doc_id(name: str) -> str:
    return f"task:{name.lower()}"


class TaskStore:
    def __init__(self, cosmos: Cosmos) -> None:
        self._cosmos = cosmos

    async def get(self, registry: str, name: str) -> TaskDoc | None:
        raw = await self._cosmos.read(CONTAINER, task_doc_id(name), registry)
        return TaskDoc.model_validate(raw) if raw is not None else None

    async def create(self, task: TaskDoc) -> bool:
        return await self._cosmos.create(CONTAINER, task) is not None

    async def replace(self, task: TaskDoc) -> TaskDoc:
        return TaskDoc.model_validate(await self._cosmos.replace(CONTAINER, task))

    async def delete(self, registry: str, name: str) -> bool:
        return await self._cosmos.delete(CONTAINER, task_doc_id(name), registry)

    async def list_tasks(self, registry: str) -> list[TaskDoc]:
        sql = "SELECT * FROM c WHERE c.registry = @r AND c.type = 'task' ORDER BY c.id"
        return [TaskDoc.model_validate(i) async for i in self._cosmos.query(CONTAINER, sql, {"@r": registry}, registry)]

    async def with_timers(self) -> list[TaskDoc]:
        """Every task with a timer trigger (cross-partition: the timer's query, once a minute)."""
        sql = "SELECT * FROM c WHERE c.type = 'task' AND c.hasTimers = true"
        return [TaskDoc.model_validate(i) async for i in self._cosmos.query_across(CONTAINER, sql)]

    async def with_base_trigger(self, registry: str) -> list[TaskDoc]:
        """The registry's tasks with a base image trigger (its partition: the bus consumer's query)."""
        sql = "SELECT * FROM c WHERE c.registry = @r AND c.type = 'task' AND c.hasBaseTrigger = true"
        items = self._cosmos.query(CONTAINER, sql, {"@r": registry}, registry)
        return [TaskDoc.model_validate(i) async for i in items]


def agent_pool_doc_id(name: str) -> str:
    return f"agentPool:{name.lower()}"


class AgentPoolStore:
    def __init__(self, cosmos: Cosmos) -> None:
        self._cosmos = cosmos

    async def get(self, registry: str, name: str) -> AgentPoolDoc | None:
        raw = await self._cosmos.read(CONTAINER, agent_pool_doc_id(name), registry)
        return AgentPoolDoc.model_validate(raw) if raw is not None else None

    async def create(self, pool: AgentPoolDoc) -> bool:
        return await self._cosmos.create(CONTAINER, pool) is not None

    async def replace(self, pool: AgentPoolDoc) -> AgentPoolDoc:
        """Write the pool back if nobody changed it since it was read (ConcurrentUpdate otherwise)."""
        return AgentPoolDoc.model_validate(await self._cosmos.replace(CONTAINER, pool))

    async def delete(self, registry: str, name: str) -> bool:
        return await self._cosmos.delete(CONTAINER, agent_pool_doc_id(name), registry)

    async def list_pools(self, registry: str) -> list[AgentPoolDoc]:
        sql = "SELECT * FROM c WHERE c.registry = @r AND c.type = 'agentPool' ORDER BY c.id"
        items = self._cosmos.query(CONTAINER, sql, {"@r": registry}, registry)
        return [AgentPoolDoc.model_validate(i) async for i in items]


def task_run_doc_id(name: str) -> str:
    return f"taskRun:{name.lower()}"


class TaskRunStore:
    def __init__(self, cosmos: Cosmos) -> None:
        self._cosmos = cosmos

    async def get(self, registry: str, name: str) -> TaskRunDoc | None:
        raw = await self._cosmos.read(CONTAINER, task_run_doc_id(name), registry)
        return TaskRunDoc.model_validate(raw) if raw is not None else None

    async def create(self, task_run: TaskRunDoc) -> bool:
        return await self._cosmos.create(CONTAINER, task_run) is not None

    async def replace(self, task_run: TaskRunDoc) -> TaskRunDoc:
        return TaskRunDoc.model_validate(await self._cosmos.replace(CONTAINER, task_run))

    async def delete(self, registry: str, name: str) -> bool:
        return await self._cosmos.delete(CONTAINER, task_run_doc_id(name), registry)

    async def list_task_runs(self, registry: str) -> list[TaskRunDoc]:
        sql = "SELECT * FROM c WHERE c.registry = @r AND c.type = 'taskRun' ORDER BY c.id"
        items = self._cosmos.query(CONTAINER, sql, {"@r": registry}, registry)
        return [TaskRunDoc.model_validate(i) async for i in items]
