"""The runs API (`scheduleRun`, `listBuildSourceUploadUrl`, `runs`) over HTTP against the session devhost, with
no runner: who may call what (anonymous, another registry's Owner, a data-plane role, a Reader, the Owner),
hostile requests refused with a 4xx before anything is written, a cancel of a queued run, the relay that sends
the queue message of a run whose process died before sending it, and what a run's token grants at
/oauth2/token (its images, nothing else, and only in its own registry).
"""

from __future__ import annotations

import base64
import io
import tarfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.auth.service import REFRESH_TOKEN_USER, AuthService
from services.auth.signing import unverified_payload
from services.management.access import assign_role
from services.management.registries import create_registry
from services.management.store import RegistryStore
from services.platform.settings import Settings
from services.tasks.models import RunDoc
from services.tasks.queue import RunQueue
from services.tasks.scheduling import relay_runs
from services.tasks.store import RunStore, run_doc_id
from tests.conftest import Devhost
from tests.entra_issuer import TestIssuer
from tests.integration.conftest import RoleScene, Stores, role_scene, unique_registry_name

pytestmark = pytest.mark.integration

API = "api-version=2025-03-01-preview"


@dataclass(frozen=True)
class Scene(RoleScene):
    run_id: str  # a queued run of `registry`


def _context() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        data = b"FROM scratch\n"
        info = tarfile.TarInfo("Dockerfile")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


async def _call(devhost: Devhost, method: str, path: str, body: object | None = None, auth: str = "") -> httpx.Response:
    headers = {"Authorization": auth} if auth else {}
    separator = "&" if "?" in path else "?"
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.request(method, f"{devhost.url}{path}{separator}{API}", json=body, headers=headers)


async def _upload(devhost: Devhost, scene_base: str, auth: str) -> str:
    reply = await _call(devhost, "POST", f"{scene_base}/listBuildSourceUploadUrl", None, auth)
    assert reply.status_code == 200, reply.text
    source = reply.json()
    async with httpx.AsyncClient(timeout=30) as http:
        put = await http.put(source["uploadUrl"], content=_context(), headers={"x-ms-blob-type": "BlockBlob"})
    assert put.status_code == 201, put.text
    return str(source["relativePath"])


def _request(source: str, **changes: object) -> dict[str, object]:
    body: dict[str, object] = {
        "type": "DockerBuildRequest",
        "imageNames": ["app:{{.Run.ID}}"],
        "dockerFilePath": "Dockerfile",
        "sourceLocation": source,
        "platform": {"os": "Linux"},
        "timeout": 600,
    }
    return body | changes


@pytest.fixture(scope="module")
async def scene(devhost: Devhost, stores: Stores, entra_issuer: TestIssuer) -> AsyncIterator[Scene]:
    partial = await role_scene(stores, entra_issuer.tenant)
    auth = "Bearer " + entra_issuer.token(partial.owner)
    source = await _upload(devhost, partial.base(), auth)
    reply = await _call(devhost, "POST", f"{partial.base()}/scheduleRun", _request(source), auth)
    assert reply.status_code == 200, reply.text
    yield Scene(**vars(partial), run_id=reply.json()["name"])


def _calls(scene: Scene) -> list[tuple[str, str, object | None]]:
    run = f"{scene.base()}/runs/{scene.run_id}"
    return [
        ("POST", f"{scene.base()}/listBuildSourceUploadUrl", None),
        ("POST", f"{scene.base()}/scheduleRun", _request("tasks/sources/20260101/" + "0" * 32 + ".tar.gz")),
        ("GET", f"{scene.base()}/runs", None),
        ("GET", run, None),
        ("PATCH", run, {"isArchiveEnabled": True}),
        ("POST", f"{run}/cancel", None),
        ("POST", f"{run}/listLogSasUrl", None),
    ]


async def _victim_run_unchanged(stores: Stores, scene: Scene) -> None:
    run = await RunStore(stores.metadata).get(scene.registry, scene.run_id)
    assert run is not None and run.status == "Queued" and not run.cancelRequested and not run.isArchiveEnabled
    assert [r.runId for r in await RunStore(stores.metadata).list_runs(scene.registry, 10)] == [scene.run_id]


async def test_without_credentials_nothing_is_served(devhost: Devhost, stores: Stores, scene: Scene) -> None:
    for method, path, body in _calls(scene):
        reply = await _call(devhost, method, path, body)
        assert reply.status_code == 401, f"{method} {path}: {reply.status_code} {reply.text}"
        assert reply.json()["error"]["code"] == "AuthenticationFailed"
    await _victim_run_unchanged(stores, scene)


async def test_another_registrys_owner_and_a_data_plane_role_get_403(
    devhost: Devhost, stores: Stores, scene: Scene, entra_issuer: TestIssuer
) -> None:
    for principal in (scene.outsider, scene.pusher):
        auth = "Bearer " + entra_issuer.token(principal)
        for method, path, body in _calls(scene):
            reply = await _call(devhost, method, path, body, auth)
            assert reply.status_code == 403, f"{method} {path}: {reply.status_code} {reply.text}"
            assert reply.json()["error"]["code"] == "AuthorizationFailed"
    # the outsider's own registry answers: the token itself is good
    mine = await _call(
        devhost, "GET", f"{scene.base(scene.other)}/runs", None, "Bearer " + entra_issuer.token(scene.outsider)
    )
    assert mine.status_code == 200 and mine.json() == {"value": []}
    await _victim_run_unchanged(stores, scene)


async def test_a_reader_reads_runs_but_schedules_cancels_and_reads_logs_nothing(
    devhost: Devhost, stores: Stores, scene: Scene, entra_issuer: TestIssuer
) -> None:
    auth = "Bearer " + entra_issuer.token(scene.reader)
    for method, path, body in _calls(scene):
        reply = await _call(devhost, method, path, body, auth)
        assert reply.status_code == (200 if method == "GET" else 403), f"{method} {path}: {reply.text}"
    await _victim_run_unchanged(stores, scene)


async def test_hostile_run_requests_are_refused_before_anything_is_written(
    devhost: Devhost, stores: Stores, scene: Scene, entra_issuer: TestIssuer
) -> None:
    auth = "Bearer " + entra_issuer.token(scene.owner)
    source = await _upload(devhost, scene.base(), auth)
    other_source = await _upload(devhost, scene.base(scene.other), "Bearer " + entra_issuer.token(scene.outsider))
    hostile: list[tuple[dict[str, object], str]] = [
        (_request("tasks/sources/20260101/" + "0" * 32 + ".tar.gz"), "nothing was uploaded"),
        (_request(other_source), "nothing was uploaded"),  # another registry's upload is not this one's
        (_request("blobs/sha256/ab/" + "a" * 64), "sourceLocation must be"),
        (_request("../" + source), "sourceLocation must be"),
        (_request(source, dockerFilePath="../../etc/passwd"), "dockerFilePath"),
        (_request(source, dockerFilePath="/etc/passwd"), "dockerFilePath"),
        (_request(source, imageNames=["evil.example.com:443/app:1"]), "imageNames"),
        (_request(source, imageNames=["UPPER/case"]), "imageNames"),
        (_request(source, timeout=0), "timeout"),
        (_request(source, timeout=10**9), "timeout"),
        (_request(source, arguments=[{"name": "A B", "value": "x"}]), "arguments"),
        (_request(source, type="SomethingElseRequest"), "not supported"),
        (_request(source, platform={"os": "Windows"}), "platform"),
    ]
    for body, reason in hostile:
        reply = await _call(devhost, "POST", f"{scene.base()}/scheduleRun", body, auth)
        assert reply.status_code == 400, f"{body}: {reply.status_code} {reply.text}"
        assert (
            reason in reply.json()["error"]["message"]
            or reason == reply.json()["error"].get("target", "")[: len(reason)]
        )
    big = {"type": "DockerBuildRequest", "dockerFilePath": "D", "pad": "x" * (2 * 1024 * 1024)}
    assert (await _call(devhost, "POST", f"{scene.base()}/scheduleRun", big, auth)).status_code == 413
    for bad in ("cb0x", "x" * 300, "CB1", "cb1%2F..%2Fx"):
        reply = await _call(devhost, "GET", f"{scene.base()}/runs/{bad}", None, auth)
        assert reply.status_code == 404, f"{bad}: {reply.status_code} {reply.text}"
    assert (await _call(devhost, "GET", f"{scene.base()}/runs?$top=0", None, auth)).status_code == 400
    await _victim_run_unchanged(stores, scene)


async def test_the_owner_schedules_reads_and_cancels_a_queued_run(
    devhost: Devhost, stores: Stores, scene: Scene, entra_issuer: TestIssuer
) -> None:
    registry = unique_registry_name()
    await create_registry(stores.metadata, stores.blobs, stores.settings, registry)
    await assign_role(stores.metadata, registry, scene.owner, "Owner", tenant=entra_issuer.tenant)
    auth = "Bearer " + entra_issuer.token(scene.owner)
    base = scene.base(registry)
    ids = []
    for _ in range(2):
        reply = await _call(devhost, "POST", f"{base}/scheduleRun", _request(await _upload(devhost, base, auth)), auth)
        assert reply.status_code == 200, reply.text
        run = reply.json()
        assert run["type"] == "Microsoft.ContainerRegistry/registries/runs"
        assert run["properties"]["status"] == "Queued" and run["properties"]["runType"] == "QuickBuild"
        ids.append(run["name"])
    assert ids == ["cb1", "cb2"]  # per registry, in order
    listed = (await _call(devhost, "GET", f"{base}/runs", None, auth)).json()["value"]
    assert [r["name"] for r in listed] == ["cb2", "cb1"]
    top = (await _call(devhost, "GET", f"{base}/runs?$top=1", None, auth)).json()["value"]
    assert [r["name"] for r in top] == ["cb2"]
    patched = await _call(devhost, "PATCH", f"{base}/runs/cb1", {"isArchiveEnabled": True}, auth)
    assert patched.json()["properties"]["isArchiveEnabled"] is True
    assert (await _call(devhost, "POST", f"{base}/runs/cb1/cancel", None, auth)).status_code == 200
    canceled = (await _call(devhost, "GET", f"{base}/runs/cb1", None, auth)).json()["properties"]
    assert canceled["status"] == "Canceled" and "finishTime" in canceled
    link = (await _call(devhost, "POST", f"{base}/runs/cb2/listLogSasUrl", None, auth)).json()["logLink"]
    assert "/tasks/logs/cb2.log?" in link and "sig=" in link
    assert (await _call(devhost, "GET", f"{base}/runs/cb9", None, auth)).status_code == 404


async def test_a_run_written_but_never_dispatched_is_sent_by_the_relay(stores: Stores) -> None:
    """The process died between writing the run and sending its queue message: the relay sends it."""
    settings = Settings(**(stores.settings.model_dump() | {"tasks_queue": "relay-" + uuid.uuid4().hex[:10]}))
    registry = unique_registry_name()
    written = (datetime.now(UTC) - timedelta(seconds=60)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    run = RunDoc(
        id=run_doc_id("cb1"),
        registry=registry,
        runId="cb1",
        number=1,
        request={},
        logPath="tasks/logs/cb1.log",
        createTime=written,
    )
    await RunStore(stores.metadata).create(run)
    queue = RunQueue(settings)
    await queue.open()
    try:
        assert await relay_runs(stores.metadata, queue, settings) >= 1
        received = await queue.receive(30)
        assert received is not None and (received.message.registry, received.message.runId) == (registry, "cb1")
        stored = await RunStore(stores.metadata).get(registry, "cb1")
        assert stored is not None and stored.dispatched
        assert registry not in {r.registry for r in await RunStore(stores.metadata).undispatched(written + "Z")}
    finally:
        await queue.close()


async def test_a_runs_token_pushes_its_images_only_and_only_in_its_registry(
    devhost: Devhost, stores: Stores, scene: Scene
) -> None:
    doc = await RegistryStore(stores.metadata).get_registry(scene.registry)
    assert doc is not None
    access = [
        {"type": "repository", "name": "base", "actions": ["pull"]},
        {"type": "repository", "name": "app", "actions": ["pull", "push"]},
    ]
    token = AuthService(stores.settings, stores.metadata).run_token(doc, "cb7", access, 600)
    port = devhost.host.rsplit(":", 1)[1]
    basic = "Basic " + base64.b64encode(f"{REFRESH_TOKEN_USER}:{token}".encode()).decode()

    async def granted(registry: str, scope: str) -> list[dict[str, object]]:
        async with httpx.AsyncClient(timeout=30) as http:
            reply = await http.get(
                f"{devhost.url}/oauth2/token",
                headers={"Host": f"{registry}.azurecr.localhost:{port}", "Authorization": basic},
                params={"service": f"{registry}.azurecr.localhost", "scope": scope},
            )
        if reply.status_code != 200:
            return []
        claims = unverified_payload(reply.json()["access_token"])
        return list(claims["access"])

    assert await granted(scene.registry, "repository:app:pull,push") == [
        {"type": "repository", "name": "app", "actions": ["pull", "push"]}
    ]
    assert await granted(scene.registry, "repository:base:pull,push") == [
        {"type": "repository", "name": "base", "actions": ["pull"]}
    ]
    assert await granted(scene.registry, "repository:other:pull") == []
    assert await granted(scene.registry, "registry:catalog:*") == []
    assert await granted(scene.other, "repository:app:pull,push") == []  # another registry: not its token


# --- tasks as resources, and their timers -------------------------------------------------------------------
TASK_YAML = "version: v1.1.0\nsteps:\n  - cmd: $Registry/base:1 echo {{.Values.greeting}}\n"


def _task_body(**properties: object) -> dict[str, object]:
    step = {
        "type": "EncodedTask",
        "contextPath": "/dev/null",
        "encodedTaskContent": base64.b64encode(TASK_YAML.encode()).decode(),
        "values": [{"name": "greeting", "value": "hi"}, {"name": "token", "value": "s3cr3t", "isSecret": True}],
    }
    return {"location": "westeurope", "properties": {"step": step, "platform": {"os": "Linux"}} | properties}


async def test_tasks_are_created_read_listed_updated_run_and_deleted(
    devhost: Devhost, stores: Stores, scene: Scene, entra_issuer: TestIssuer
) -> None:
    auth = "Bearer " + entra_issuer.token(scene.owner)
    tasks = f"{scene.base()}/tasks"
    timers = {
        "timerTriggers": [{"name": "nightly", "schedule": "30 2 * * *"}, {"name": "hourly", "schedule": "0 * * * *"}]
    }
    created = await _call(devhost, "PUT", f"{tasks}/hello-task", _task_body(trigger=timers), auth)
    assert created.status_code == 201, created.text
    shape = created.json()
    assert (
        shape["type"] == "Microsoft.ContainerRegistry/registries/tasks" and shape["properties"]["status"] == "Enabled"
    )
    secret = next(v for v in shape["properties"]["step"]["values"] if v["name"] == "token")
    assert secret["value"] is None  # a secret value never comes back...
    details = (await _call(devhost, "POST", f"{tasks}/hello-task/listDetails", None, auth)).json()
    assert [v["value"] for v in details["properties"]["step"]["values"]] == ["hi", "s3cr3t"]  # ...but in listDetails
    raw = await stores.metadata.read("registries", "task:hello-task", scene.registry)
    assert raw is not None and "s3cr3t" not in str(raw)  # sealed at rest
    assert [t["name"] for t in shape["properties"]["trigger"]["timerTriggers"]] == ["nightly", "hourly"]
    listed = (await _call(devhost, "GET", tasks, None, auth)).json()["value"]
    assert [t["name"] for t in listed] == ["hello-task"]
    patched = await _call(
        devhost, "PATCH", f"{tasks}/hello-task", {"properties": {"status": "Disabled", "timeout": 120}}, auth
    )
    assert patched.json()["properties"]["status"] == "Disabled" and patched.json()["properties"]["timeout"] == 120
    task_id = shape["id"]
    run = await _call(
        devhost, "POST", f"{scene.base()}/scheduleRun", {"type": "TaskRunRequest", "taskId": task_id}, auth
    )
    assert run.status_code == 200, run.text
    assert run.json()["properties"]["task"] == "hello-task" and run.json()["properties"]["runType"] == "QuickRun"
    filtered = await _call(devhost, "GET", f"{scene.base()}/runs?$filter=TaskName eq 'hello-task'", None, auth)
    assert [r["name"] for r in filtered.json()["value"]] == [run.json()["name"]]
    await _call(devhost, "POST", f"{scene.base()}/runs/{run.json()['name']}/cancel", None, auth)  # no runner here
    provider = "/subscriptions/x/resourceGroups/y/providers/Microsoft.ContainerRegistry"
    other = f"{provider}/registries/{scene.other}/tasks/hello-task"
    refused = await _call(
        devhost, "POST", f"{scene.base()}/scheduleRun", {"type": "TaskRunRequest", "taskId": other}, auth
    )
    assert refused.status_code == 404
    assert (await _call(devhost, "DELETE", f"{tasks}/hello-task", None, auth)).status_code == 200
    assert (await _call(devhost, "DELETE", f"{tasks}/hello-task", None, auth)).status_code == 204
    assert (await _call(devhost, "GET", f"{tasks}/hello-task", None, auth)).status_code == 404


async def test_bad_tasks_are_refused_and_strangers_get_nothing(
    devhost: Devhost, scene: Scene, entra_issuer: TestIssuer
) -> None:
    auth = "Bearer " + entra_issuer.token(scene.owner)
    tasks = f"{scene.base()}/tasks"
    bad_yaml = _task_body()
    bad_yaml["properties"]["step"]["encodedTaskContent"] = base64.b64encode(b"steps:\n  - nope: 1\n").decode()  # type: ignore[index]
    hostile: list[tuple[str, dict[str, object], str]] = [
        ("bad-cron", _task_body(trigger={"timerTriggers": [{"name": "t", "schedule": "61 * * * *"}]}), "outside"),
        ("few-fields", _task_body(trigger={"timerTriggers": [{"name": "t", "schedule": "* * *"}]}), "five fields"),
        ("same-names", _task_body(trigger={"timerTriggers": [{"name": "t", "schedule": "* * * * *"}] * 2}), "differ"),
        ("bad-yaml1", bad_yaml, "line 2"),
        ("commit-trigger", _task_body(trigger={"sourceTriggers": [{"name": "s"}]}), "sourceRepository"),
        ("no-location", {"properties": _task_body()["properties"]}, "location is required"),
        ("no-step", {"location": "westeurope", "properties": {}}, "step is required"),
        (
            "evil-context",
            _task_body(step={"type": "Docker", "contextPath": "https://user:pw@evil.example/x.git"}),
            "contextPath",
        ),
    ]
    for name, body, reason in hostile:
        reply = await _call(devhost, "PUT", f"{tasks}/{name}", body, auth)
        assert reply.status_code == 400, f"{name}: {reply.status_code} {reply.text}"
        assert reason in reply.json()["error"]["message"], f"{name}: {reply.text}"
    assert (await _call(devhost, "GET", f"{tasks}/x", None, auth)).status_code == 404  # not a task name
    assert (await _call(devhost, "GET", tasks, None, auth)).json() == {"value": []}
    for principal, expected in ((scene.outsider, 403), (scene.pusher, 403), (scene.reader, 403)):
        reply = await _call(
            devhost, "PUT", f"{tasks}/stranger", _task_body(), "Bearer " + entra_issuer.token(principal)
        )
        assert reply.status_code == expected, reply.text
    assert (await _call(devhost, "PUT", f"{tasks}/stranger", _task_body())).status_code == 401
    assert (await _call(devhost, "GET", tasks, None, "Bearer " + entra_issuer.token(scene.reader))).status_code == 200


async def test_a_timer_fires_its_task_once_per_due_minute(
    devhost: Devhost, stores: Stores, scene: Scene, entra_issuer: TestIssuer
) -> None:
    from services.platform.secrets import secret_box
    from services.tasks.triggers import fire_timers

    registry = unique_registry_name()
    await create_registry(stores.metadata, stores.blobs, stores.settings, registry)
    await assign_role(stores.metadata, registry, scene.owner, "Owner", tenant=entra_issuer.tenant)
    auth = "Bearer " + entra_issuer.token(scene.owner)
    timers = {
        "timerTriggers": [{"name": "at-7", "schedule": "7 * * * *"}, {"name": "weekdays", "schedule": "7 3 * * 1-5"}]
    }
    reply = await _call(devhost, "PUT", f"{scene.base(registry)}/tasks/timed-task", _task_body(trigger=timers), auth)
    assert reply.status_code == 201, reply.text
    settings = Settings(**(stores.settings.model_dump() | {"tasks_queue": "timers-" + uuid.uuid4().hex[:10]}))
    queue = RunQueue(settings)
    await queue.open()
    box = secret_box(settings.secrets_keys, settings.secrets_keys_file)
    try:
        monday_0307 = datetime(2031, 3, 3, 3, 7, 5, tzinfo=UTC)  # both triggers are due
        assert await fire_timers(stores.metadata, stores.blobs, queue, box, monday_0307) >= 2
        assert await fire_timers(stores.metadata, stores.blobs, queue, box, monday_0307) == 0  # once per minute
        await fire_timers(stores.metadata, stores.blobs, queue, box, monday_0307 + timedelta(minutes=1))  # not due
        runs = await RunStore(stores.metadata).list_runs(registry, 10, "timed-task")
        assert sorted((r.timerTrigger or {}).get("timerTriggerName", "") for r in runs) == ["at-7", "weekdays"]
        assert {(r.timerTrigger or {}).get("scheduleOccurrence") for r in runs} == {"2031-03-03T03:07:00Z"}
        received = await queue.receive(30)
        assert received is not None and received.message.registry == registry
        # disabled: nothing fires
        await _call(
            devhost, "PATCH", f"{scene.base(registry)}/tasks/timed-task", {"properties": {"status": "Disabled"}}, auth
        )
        later = monday_0307 + timedelta(hours=1)
        await fire_timers(stores.metadata, stores.blobs, queue, box, later)
        assert len(await RunStore(stores.metadata).list_runs(registry, 10, "timed-task")) == 2
    finally:
        await queue.close()


async def test_a_base_image_update_runs_a_task_once_and_never_for_its_own_push(
    devhost: Devhost, stores: Stores, scene: Scene, entra_issuer: TestIssuer
) -> None:
    from services.platform.secrets import secret_box
    from services.tasks.triggers import on_image_pushed

    registry = unique_registry_name()
    await create_registry(stores.metadata, stores.blobs, stores.settings, registry)
    await assign_role(stores.metadata, registry, scene.owner, "Owner", tenant=entra_issuer.tenant)
    auth = "Bearer " + entra_issuer.token(scene.owner)
    base = scene.base(registry)
    source = await _upload(devhost, base, auth)
    step = {"type": "Docker", "contextPath": source, "dockerFilePath": "Dockerfile", "imageNames": ["app:1"]}
    body = {"location": "westeurope", "properties": {"step": step, "trigger": {"baseImageTrigger": {"name": "b"}}}}
    assert (await _call(devhost, "PUT", f"{base}/tasks/self-base", body, auth)).status_code == 201
    encoded = {"type": "EncodedTask", "encodedTaskContent": base64.b64encode(TASK_YAML.encode()).decode()}
    refused = await _call(
        devhost,
        "PUT",
        f"{base}/tasks/not-docker",
        {"location": "westeurope", "properties": {"step": encoded, "trigger": {"baseImageTrigger": {"name": "b"}}}},
        auth,
    )
    assert refused.status_code == 400 and "needs a Docker step" in refused.text
    # what its last run recorded: it pulled base:1 at digest A, and pushed app:1 at digest P
    digest = {name: "sha256:" + name * 64 for name in "abp"}
    run_id = await RunStore(stores.metadata).next_run_id(registry)
    last = RunDoc(
        id=run_doc_id(run_id), registry=registry, runId=run_id, number=1, request={}, logPath="x", task="self-base",
        status="Succeeded", baseImages=[{"repository": "base", "tag": "1", "digest": digest["a"]}],
        outputImages=[{"repository": "app", "tag": "1", "digest": digest["p"]}],
    )  # fmt: skip
    await RunStore(stores.metadata).create(last)
    settings = Settings(**(stores.settings.model_dump() | {"tasks_queue": "base-" + uuid.uuid4().hex[:10]}))
    queue = RunQueue(settings)
    await queue.open()
    box = secret_box(settings.secrets_keys, settings.secrets_keys_file)

    def push(repository: str, tag: str | None, value: str, action: str = "push") -> dict[str, object]:
        target: dict[str, object] = {"mediaType": "x", "repository": repository, "digest": value}
        if tag:
            target["tag"] = tag
        return {"id": str(uuid.uuid4()), "action": action, "target": target}

    async def fire(event: dict[str, object]) -> int:
        return await on_image_pushed(stores.metadata, stores.blobs, queue, box, registry, event)

    try:
        assert await fire(push("base", "1", digest["a"])) == 0  # the digest it already built from
        assert await fire(push("base", "2", digest["b"])) == 0  # another tag
        assert await fire(push("other", "1", digest["b"])) == 0  # an unrelated repository
        assert await fire(push("base", "1", digest["b"], action="delete")) == 0
        assert await fire(push("base", "1", digest["p"])) == 0  # what the task pushed itself: no loop
        assert await fire(push("base", "1", digest["b"])) == 1  # the base moved
        assert await fire(push("base", "1", digest["b"])) == 0  # the same update again (a redelivery)
        runs = await RunStore(stores.metadata).list_runs(registry, 10, "self-base")
        triggered = [r for r in runs if r.imageUpdateTrigger]
        assert len(triggered) == 1 and triggered[0].imageUpdateTrigger is not None
        assert triggered[0].imageUpdateTrigger["images"][0]["digest"] == digest["b"]
    finally:
        await queue.close()
