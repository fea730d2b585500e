"""Agent pools and task runs (`agentPools`, `taskRuns`) over HTTP against the session devhost, and the pool
slots the runner honours, against the real Cosmos emulator and Azurite queue: who may call what (anonymous,
another registry's Owner, a data-plane role, a Reader), hostile bodies and names refused with ARM's codes,
Premium only, the vCPU quotas, a run for an unknown pool refused at scheduling, listQueueStatus, a pool
with queued runs not deleted; count 0 holds a pool's runs in the queue and raising it releases them; a task
run's secrets masked except through listDetails and its forceUpdateTag running it again.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from services.management.access import assign_role
from services.management.registries import create_registry
from services.platform.settings import Settings
from services.tasks import pools
from services.tasks.models import AgentPoolBody, AgentPoolProperties, AgentPoolUpdate, RunDoc, RunMessage
from services.tasks.queue import ReceivedRun, RunQueue
from services.tasks.runner import Runner
from services.tasks.store import AgentPoolStore, RunStore, run_doc_id
from tests.conftest import Devhost
from tests.entra_issuer import TestIssuer
from tests.integration.conftest import RoleScene, Stores, role_scene, unique_registry_name

pytestmark = pytest.mark.integration

API = "api-version=2025-03-01-preview"
TASK_FILE = base64.b64encode(b"version: v1.1.0\nsteps:\n  - cmd: alpine echo hi\n").decode()


async def _call(devhost: Devhost, method: str, path: str, body: object | None = None, auth: str = "") -> httpx.Response:
    headers = {"Authorization": auth} if auth else {}
    separator = "&" if "?" in path else "?"
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.request(method, f"{devhost.url}{path}{separator}{API}", json=body, headers=headers)


def _encoded(**changes: object) -> dict[str, object]:
    return {"type": "EncodedTaskRunRequest", "encodedTaskContent": TASK_FILE, "timeout": 600} | changes


@pytest.fixture(scope="module")
async def scene(devhost: Devhost, stores: Stores, entra_issuer: TestIssuer) -> AsyncIterator[RoleScene]:
    scene = await role_scene(stores, entra_issuer.tenant)
    auth = "Bearer " + entra_issuer.token(scene.owner)
    reply = await _call(devhost, "PUT", f"{scene.base()}/agentPools/victim", {"properties": {"count": 0}}, auth)
    assert reply.status_code == 201, reply.text
    body = {"properties": {"runRequest": _encoded(values=[{"name": "k", "value": "s3cret", "isSecret": True}])}}
    reply = await _call(devhost, "PUT", f"{scene.base()}/taskRuns/victim-run", body, auth)
    assert reply.status_code == 201, reply.text
    yield scene


def _calls(scene: RoleScene) -> list[tuple[str, str, object | None]]:
    pool, task_run = f"{scene.base()}/agentPools/victim", f"{scene.base()}/taskRuns/victim-run"
    return [
        ("GET", f"{scene.base()}/agentPools", None),
        ("GET", pool, None),
        ("PUT", pool, {"properties": {"count": 2}}),
        ("PATCH", pool, {"properties": {"count": 3}}),
        ("POST", f"{pool}/listQueueStatus", None),
        ("DELETE", pool, None),
        ("GET", f"{scene.base()}/taskRuns", None),
        ("GET", task_run, None),
        ("PUT", task_run, {"properties": {"runRequest": _encoded(), "forceUpdateTag": "x"}}),
        ("PATCH", task_run, {"properties": {"forceUpdateTag": "evil"}}),
        ("POST", f"{task_run}/listDetails", None),
        ("DELETE", task_run, None),
    ]


async def _victims_unchanged(stores: Stores, scene: RoleScene) -> None:
    pool = await AgentPoolStore(stores.metadata).get(scene.registry, "victim")
    assert pool is not None and pool.count == 0
    runs = await RunStore(stores.metadata).list_runs(scene.registry, 10)
    assert [r.runId for r in runs] == ["cb1"]  # the victim task run's one run: nothing scheduled again


async def test_strangers_get_401_or_403_and_a_reader_reads_only(
    devhost: Devhost, stores: Stores, scene: RoleScene, entra_issuer: TestIssuer
) -> None:
    for method, path, body in _calls(scene):
        reply = await _call(devhost, method, path, body)
        assert reply.status_code == 401, f"{method} {path}: {reply.status_code} {reply.text}"
        assert reply.json()["error"]["code"] == "AuthenticationFailed"
    for principal in (scene.outsider, scene.pusher):
        auth = "Bearer " + entra_issuer.token(principal)
        for method, path, body in _calls(scene):
            reply = await _call(devhost, method, path, body, auth)
            assert reply.status_code == 403, f"{method} {path}: {reply.status_code} {reply.text}"
            assert reply.json()["error"]["code"] == "AuthorizationFailed"
    auth = "Bearer " + entra_issuer.token(scene.reader)
    for method, path, body in _calls(scene):
        reply = await _call(devhost, method, path, body, auth)
        assert reply.status_code == (200 if method == "GET" else 403), f"{method} {path}: {reply.text}"
    shown = (await _call(devhost, "GET", f"{scene.base()}/taskRuns/victim-run", None, auth)).json()
    assert shown["properties"]["runRequest"]["values"][0]["value"] is None  # masked for a reader too
    # the outsider's own registry has none of them: names do not reach across registries
    outsider = "Bearer " + entra_issuer.token(scene.outsider)
    for path in ("agentPools/victim", "taskRuns/victim-run"):
        reply = await _call(devhost, "GET", f"{scene.base(scene.other)}/{path}", None, outsider)
        assert reply.status_code == 404 and reply.json()["error"]["code"] == "ResourceNotFound"
    await _victims_unchanged(stores, scene)


async def test_hostile_pools_and_task_runs_are_refused_with_arm_codes(
    devhost: Devhost, stores: Stores, scene: RoleScene, entra_issuer: TestIssuer
) -> None:
    auth = "Bearer " + entra_issuer.token(scene.owner)
    pool, runs = f"{scene.base()}/agentPools", f"{scene.base()}/taskRuns"
    theirs = {"type": "TaskRunRequest", "taskId": scene.base(scene.other) + "/tasks/theirs"}
    subnet = {"virtualNetworkSubnetResourceId": "../x"}

    def req(request: object) -> dict[str, object]:
        return {"properties": {"runRequest": request}}

    refused: list[tuple[str, str, object, int, str]] = [
        ("PUT", f"{pool}/ab", {}, 400, "InvalidResourceName"),
        ("PUT", f"{pool}/{'a' * 21}", {}, 400, "InvalidResourceName"),
        ("PUT", f"{pool}/bad_name", {}, 400, "InvalidResourceName"),
        ("PUT", f"{pool}/newpool", {"properties": {"count": -1}}, 400, "InvalidRequestContent"),
        ("PUT", f"{pool}/newpool", {"properties": {"count": "many"}}, 400, "InvalidRequestContent"),
        ("PUT", f"{pool}/newpool", {"properties": {"tier": "S9"}}, 400, "InvalidRequestContent"),
        ("PUT", f"{pool}/newpool", {"properties": {"os": "Windows"}}, 400, "InvalidRequestContent"),
        ("PUT", f"{pool}/newpool", {"properties": subnet}, 400, "InvalidRequestContent"),
        ("PUT", f"{pool}/newpool", {"properties": {"tier": "S3", "count": 3}}, 400, "QuotaExceeded"),  # 24 > 16
        ("PUT", f"{pool}/newpool", {"properties": {"tier": "I6", "count": 1}}, 400, "QuotaExceeded"),  # quota 0
        ("PUT", f"{pool}/victim", {"properties": {"tier": "S2"}}, 400, "InvalidRequestContent"),  # fixed tier
        ("PATCH", f"{pool}/victim", {"properties": {"count": 9}}, 400, "QuotaExceeded"),
        ("PATCH", f"{pool}/nosuch", {"properties": {"count": 1}}, 404, "ResourceNotFound"),
        ("POST", f"{pool}/nosuch/listQueueStatus", None, 404, "ResourceNotFound"),
        ("GET", f"{pool}/x%2F..%2Fy", None, 404, "NotFound"),
        ("PUT", f"{pool}/newpool", {"pad": "x" * (2 * 1024 * 1024)}, 413, "RequestEntityTooLarge"),
        ("PUT", f"{runs}/abc", {}, 400, "InvalidResourceName"),
        ("PUT", f"{runs}/newrun1", {"properties": {}}, 400, "InvalidRequestContent"),
        ("PUT", f"{runs}/newrun1", req({"type": "Evil"}), 400, "InvalidRequestContent"),
        ("PUT", f"{runs}/newrun1", req(_encoded(timeout=0)), 400, "InvalidRequestContent"),
        ("PUT", f"{runs}/newrun1", req(_encoded(agentPoolName="nosuch")), 400, "InvalidRequestContent"),
        ("PUT", f"{runs}/newrun1", req(theirs), 404, "ResourceNotFound"),
        ("PATCH", f"{runs}/nosuch-run", {"properties": {"forceUpdateTag": "1"}}, 404, "ResourceNotFound"),
        ("POST", f"{scene.base()}/scheduleRun", _encoded(agentPoolName="nosuch"), 400, "InvalidRequestContent"),
        ("POST", f"{scene.base()}/scheduleRun", _encoded(agentPoolName="../victim"), 400, "InvalidRequestContent"),
    ]  # fmt: skip
    for method, path, body, status, code in refused:
        reply = await _call(devhost, method, path, body, auth)
        assert reply.status_code == status, f"{method} {path} {str(body)[:100]}: {reply.status_code} {reply.text}"
        assert reply.json()["error"]["code"] == code, reply.text
    # a task naming an unknown pool is refused when it is written
    task = {
        "location": "local",
        "properties": {"step": {"type": "EncodedTask", "encodedTaskContent": TASK_FILE}, "agentPoolName": "nosuch"},
    }
    reply = await _call(devhost, "PUT", f"{scene.base()}/tasks/pooltask", task, auth)
    assert reply.status_code == 400 and "nosuch" in reply.json()["error"]["message"]
    # agent pools are Premium only
    basic = unique_registry_name()
    await create_registry(stores.metadata, stores.blobs, stores.settings, basic, "Basic")
    await assign_role(stores.metadata, basic, scene.owner, "Owner", tenant=entra_issuer.tenant)
    reply = await _call(devhost, "PUT", f"{scene.base(basic)}/agentPools/pool1", {}, auth)
    assert reply.status_code == 400 and reply.json()["error"]["code"] == "RegistrySkuNotSupported"
    assert await AgentPoolStore(stores.metadata).list_pools(basic) == []
    assert [p.name for p in await AgentPoolStore(stores.metadata).list_pools(scene.registry)] == ["victim"]
    await _victims_unchanged(stores, scene)


async def test_the_owner_manages_a_pool_and_its_queue(
    devhost: Devhost, stores: Stores, scene: RoleScene, entra_issuer: TestIssuer
) -> None:
    registry = unique_registry_name()
    await create_registry(stores.metadata, stores.blobs, stores.settings, registry, "Premium")
    await assign_role(stores.metadata, registry, scene.owner, "Owner", tenant=entra_issuer.tenant)
    auth = "Bearer " + entra_issuer.token(scene.owner)
    base = f"{scene.base(registry)}/agentPools"
    subnet = (
        "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/net/providers/Microsoft.Network"
        "/virtualNetworks/vnet/subnets/builds"
    )
    created = await _call(
        devhost,
        "PUT",
        f"{base}/Builders",
        {"properties": {"tier": "S2", "virtualNetworkSubnetResourceId": subnet}},
        auth,
    )
    assert created.status_code == 201, created.text
    pool = created.json()
    assert pool["type"] == "Microsoft.ContainerRegistry/registries/agentPools" and pool["name"] == "Builders"
    assert pool["properties"] == {
        "count": 1, "tier": "S2", "os": "Linux", "provisioningState": "Succeeded",
        "virtualNetworkSubnetResourceId": subnet,
    }  # fmt: skip
    again = await _call(devhost, "PUT", f"{base}/builders", {"properties": {"count": 2}, "tags": {"a": "b"}}, auth)
    assert again.status_code == 200 and again.json()["properties"]["count"] == 2 and again.json()["tags"] == {"a": "b"}
    scaled = await _call(devhost, "PATCH", f"{base}/builders", {"properties": {"count": 0}}, auth)
    assert scaled.status_code == 200 and scaled.json()["properties"]["count"] == 0
    assert [p["name"] for p in (await _call(devhost, "GET", base, None, auth)).json()["value"]] == ["Builders"]
    # runs name it (any spelling): they queue for it
    for _ in range(2):
        reply = await _call(
            devhost, "POST", f"{scene.base(registry)}/scheduleRun", _encoded(agentPoolName="BUILDERS"), auth
        )
        assert reply.status_code == 200, reply.text
        assert reply.json()["properties"]["agentPoolName"] == "Builders"
    plain = await _call(devhost, "POST", f"{scene.base(registry)}/scheduleRun", _encoded(), auth)
    assert "agentPoolName" not in plain.json()["properties"]  # the default queue, as before
    status = await _call(devhost, "POST", f"{base}/builders/listQueueStatus", None, auth)
    assert status.status_code == 200 and status.json() == {"count": 2}
    # a task run in the pool, and a task whose runs go there
    body = {"properties": {"runRequest": _encoded(agentPoolName="builders")}}
    assert (await _call(devhost, "PUT", f"{scene.base(registry)}/taskRuns/in-pool", body, auth)).status_code == 201
    task = {
        "location": "local",
        "properties": {"step": {"type": "EncodedTask", "encodedTaskContent": TASK_FILE}, "agentPoolName": "builders"},
    }
    reply = await _call(devhost, "PUT", f"{scene.base(registry)}/tasks/pooltask", task, auth)
    assert reply.status_code == 201 and reply.json()["properties"]["agentPoolName"] == "Builders"
    run = await _call(
        devhost,
        "POST",
        f"{scene.base(registry)}/scheduleRun",
        {"type": "TaskRunRequest", "taskId": reply.json()["id"]},
        auth,
    )
    assert run.json()["properties"]["agentPoolName"] == "Builders"
    assert (await _call(devhost, "POST", f"{base}/builders/listQueueStatus", None, auth)).json() == {"count": 4}
    # a pool with queued runs is not deleted (they would never run): cancel them first
    refused = await _call(devhost, "DELETE", f"{base}/builders", None, auth)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "AgentPoolInUse", refused.text
    assert "4 queued or running" in refused.json()["error"]["message"]
    for r in await RunStore(stores.metadata).list_runs(registry, 10):
        if r.agentPoolName:
            assert (
                await _call(devhost, "POST", f"{scene.base(registry)}/runs/{r.runId}/cancel", None, auth)
            ).status_code == 200
    assert (await _call(devhost, "POST", f"{base}/builders/listQueueStatus", None, auth)).json() == {"count": 0}
    deleted = await _call(devhost, "DELETE", f"{base}/builders", None, auth)
    assert deleted.status_code == 202, deleted.text
    async with httpx.AsyncClient(timeout=30) as http:
        followed = await http.get(deleted.headers["Location"], headers={"Authorization": auth})
    assert followed.status_code == 200
    assert (await _call(devhost, "DELETE", f"{base}/builders", None, auth)).status_code == 204
    assert (await _call(devhost, "GET", f"{base}/builders", None, auth)).status_code == 404


async def test_task_runs_run_again_only_for_a_new_force_update_tag(
    devhost: Devhost, stores: Stores, scene: RoleScene, entra_issuer: TestIssuer
) -> None:
    registry = unique_registry_name()
    await create_registry(stores.metadata, stores.blobs, stores.settings, registry, "Premium")
    await assign_role(stores.metadata, registry, scene.owner, "Owner", tenant=entra_issuer.tenant)
    auth = "Bearer " + entra_issuer.token(scene.owner)
    path = f"{scene.base(registry)}/taskRuns/nightly"
    secrets = {
        "values": [{"name": "token", "value": "v4lue-s3cret", "isSecret": True}, {"name": "plain", "value": "p"}],
        "credentials": {
            "customRegistries": {"other.example.com": {"userName": {"value": "u"}, "password": {"value": "pw-s3cret"}}}
        },
    }
    body = {"properties": {"runRequest": _encoded(**secrets), "forceUpdateTag": "1"}, "location": "local"}
    created = await _call(devhost, "PUT", path, body, auth)
    assert created.status_code == 201, created.text
    shown = created.json()
    assert shown["type"] == "Microsoft.ContainerRegistry/registries/taskRuns"
    assert shown["properties"]["provisioningState"] == "Succeeded" and shown["properties"]["forceUpdateTag"] == "1"
    assert shown["properties"]["runResult"]["name"] == "cb1"
    assert shown["properties"]["runResult"]["properties"]["status"] == "Queued"
    request = shown["properties"]["runRequest"]
    assert [v["value"] for v in request["values"]] == [None, "p"]
    registries = request["credentials"]["customRegistries"]["other.example.com"]
    assert registries["password"]["value"] is None and registries["userName"]["value"] is None
    assert "s3cret" not in created.text
    details = (await _call(devhost, "POST", f"{path}/listDetails", None, auth)).json()["properties"]["runRequest"]
    assert details["values"][0]["value"] == "v4lue-s3cret"
    assert details["credentials"]["customRegistries"]["other.example.com"]["password"]["value"] == "pw-s3cret"
    # the same PUT again, and the same tag: no new run
    assert (await _call(devhost, "PUT", path, body, auth)).json()["properties"]["runResult"]["name"] == "cb1"
    same = await _call(devhost, "PATCH", path, {"properties": {"forceUpdateTag": "1"}}, auth)
    assert same.status_code == 200 and same.json()["properties"]["runResult"]["name"] == "cb1"
    # a new tag: it runs again, with its secrets (sealed to the new run)
    again = await _call(devhost, "PATCH", path, {"properties": {"forceUpdateTag": "2"}}, auth)
    assert again.status_code == 200 and again.json()["properties"]["runResult"]["name"] == "cb2"
    assert again.json()["properties"]["forceUpdateTag"] == "2"
    cb2 = await RunStore(stores.metadata).get(registry, "cb2")
    assert cb2 is not None and cb2.request["values"][0]["value"] != "v4lue-s3cret" and cb2.customRegistries
    # runResult is read fresh
    await RunStore(stores.metadata).patch(registry, "cb2", {"status": "Succeeded"})
    fresh = (await _call(devhost, "GET", path, None, auth)).json()["properties"]["runResult"]["properties"]
    assert fresh["status"] == "Succeeded"
    listed = (await _call(devhost, "GET", f"{scene.base(registry)}/taskRuns", None, auth)).json()["value"]
    assert [t["name"] for t in listed] == ["nightly"]
    # deleting the task run keeps its runs
    assert (await _call(devhost, "DELETE", path, None, auth)).status_code == 200
    assert (await _call(devhost, "DELETE", path, None, auth)).status_code == 204
    assert (await _call(devhost, "GET", path, None, auth)).status_code == 404
    assert [r.runId for r in await RunStore(stores.metadata).list_runs(registry, 10)] == ["cb2", "cb1"]


# --- the runner and a pool's slots -------------------------------------------------------------------------------
async def _next(queue: RunQueue, seconds: float = 20.0) -> ReceivedRun:
    """The next message to come into sight (a held one comes back after TASKS_POOL_WAIT_SECONDS)."""
    for _ in range(int(seconds / 0.25)):
        received = await queue.receive(60)
        if received is not None:
            return received
        await asyncio.sleep(0.25)
    raise AssertionError("no message came back")


async def test_count_zero_holds_a_pools_runs_and_raising_it_releases_them(stores: Stores) -> None:
    settings = Settings(
        **(
            stores.settings.model_dump()
            | {"tasks_queue": "pools-" + uuid.uuid4().hex[:10], "tasks_pool_wait_seconds": 1}
        )
    )
    registry = unique_registry_name()
    await create_registry(stores.metadata, stores.blobs, settings, registry, "Premium")
    body = AgentPoolBody(properties=AgentPoolProperties(count=0))
    await pools.put_pool(stores.metadata, settings, registry, "Premium", "local", "pool1", body)
    runs = RunStore(stores.metadata)
    for run_id in ("cb1", "cb2"):
        # a request the runner refuses at once (no build needed): the run ends in Error as soon as it starts
        await runs.create(
            RunDoc(
                id=run_doc_id(run_id), registry=registry, runId=run_id, number=int(run_id[2:]),
                request={"type": "FileTaskRunRequest"}, logPath=f"tasks/logs/{run_id}.log", agentPoolName="pool1",
            )
        )  # fmt: skip
    runner = Runner(settings)
    await runner.open()
    try:
        for run_id in ("cb1", "cb2"):
            await runner.queue.send(RunMessage(registry=registry, runId=run_id))
        for _ in range(2):  # count 0: each message is looked at and put back; the runs stay queued
            await runner.handle(await _next(runner.queue))
        for _ in range(2):
            await runner.handle(await _next(runner.queue))  # back again after the wait: still held
        assert {(await runs.get(registry, r)).status for r in ("cb1", "cb2")} == {"Queued"}  # type: ignore[union-attr]
        pool = await pools.require_pool(stores.metadata, registry, "pool1")
        assert await pools.queued_runs(stores.metadata, registry, pool) == 2 and pool.running == []
        # raising the count to 1 releases one at a time
        update = AgentPoolUpdate.model_validate({"properties": {"count": 1}})
        await pools.update_pool(stores.metadata, settings, registry, "pool1", update)
        first = await _next(runner.queue)
        await runner.handle(first)
        ran = await runs.get(registry, first.message.runId)
        assert ran is not None and ran.status == "Error" and ran.attempts == 1
        assert (await pools.require_pool(stores.metadata, registry, "pool1")).running == []  # its slot given back
        second = await _next(runner.queue)
        await runner.handle(second)
        assert {(await runs.get(registry, r)).status for r in ("cb1", "cb2")} == {"Error"}  # type: ignore[union-attr]
        assert await runner.queue.receive(1) is None  # both messages completed
    finally:
        await runner.close()


async def test_at_most_count_runs_hold_a_slot_and_a_dead_runners_slot_is_taken_back(stores: Stores) -> None:
    registry = unique_registry_name()
    body = AgentPoolBody(properties=AgentPoolProperties(count=1, tier="S3"))
    await pools.put_pool(stores.metadata, stores.settings, registry, "Premium", "local", "pool2", body)
    runs = RunStore(stores.metadata)
    for run_id in ("cb1", "cb2", "cb3"):
        await runs.create(
            RunDoc(
                id=run_doc_id(run_id), registry=registry, runId=run_id, number=int(run_id[2:]), request={},
                logPath=f"tasks/logs/{run_id}.log", agentPoolName="pool2",
            )
        )  # fmt: skip
    # competing runners: of several claims at once, exactly one gets the pool's one slot
    results = await asyncio.gather(*(pools.take_slot(stores.metadata, registry, "pool2", r) for r in ("cb1", "cb2")))
    assert sorted(results) == ["full", "taken"]
    holder = "cb1" if results[0] == "taken" else "cb2"
    waiter = "cb2" if holder == "cb1" else "cb1"
    assert await pools.take_slot(stores.metadata, registry, "pool2", holder) == "taken"  # asked again: still its
    # the holder's runner died and its run was ended (Error) without giving the slot back: taken back
    await runs.patch(registry, holder, {"status": "Error"})
    assert await pools.take_slot(stores.metadata, registry, "pool2", waiter) == "taken"
    assert (await pools.require_pool(stores.metadata, registry, "pool2")).running == [waiter]
    await pools.release_slot(stores.metadata, registry, "pool2", waiter)
    assert await pools.take_slot(stores.metadata, registry, "pool2", "cb3") == "taken"
    # a deleted pool: its waiting runs are told so
    await AgentPoolStore(stores.metadata).delete(registry, "pool2")
    assert await pools.take_slot(stores.metadata, registry, "pool2", waiter) == "gone"
