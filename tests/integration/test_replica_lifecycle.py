"""A replica's life (issue 12, step 5): a new replica is backfilled with what was pushed before it, with its
progress on the replication resource, resumably, and a rerun copies nothing; removing a replica deletes its
copies; webhooks get our `replicated` event and ACR's per-region push when the image reaches their region."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from services.devhost.stack import LocalStack
from services.management.access import assign_role
from services.management.store import LOCAL_RESOURCE_GROUP, LOCAL_SUBSCRIPTION
from services.registry.store import repo_key
from services.replication.backfill import backfill, resume_jobs
from services.replication.store import ImageStatusStore, ReplicationStore
from services.replication.worker import ReplicationWorker
from services.webhooks.resources import WebhookChanges, put_webhook
from tests.conftest import Devhost, running_devhost
from tests.entra_issuer import TestIssuer
from tests.integration.conftest import Stores, registry_client, settings_from_env
from tests.integration.geo import (
    OCI_MANIFEST,
    geo_devhost_env,
    geo_registry,
    push_multi_platform,
    regional_blobs,
    wait_replicated,
)
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

API = {"api-version": "2025-11-01"}
IMAGES = 200


@pytest.fixture(scope="module")
def geo_devhost(
    local_stack: LocalStack, entra_issuer: TestIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Devhost]:
    with running_devhost(geo_devhost_env(local_stack, entra_issuer), tmp_path_factory.mktemp("geo-life")) as host:
        yield host


@pytest.fixture
async def worker(geo_devhost: Devhost) -> AsyncIterator[ReplicationWorker]:
    instance = ReplicationWorker(settings_from_env(geo_devhost.env))
    await instance.open()
    yield instance
    await instance.close()


@dataclass(frozen=True)
class Arm:
    devhost: Devhost
    issuer: TestIssuer
    owner: str

    def path(self, registry: str, replication: str) -> str:
        return (
            f"{self.devhost.url}/subscriptions/{LOCAL_SUBSCRIPTION}/resourceGroups/{LOCAL_RESOURCE_GROUP}"
            f"/providers/Microsoft.ContainerRegistry/registries/{registry}/replications/{replication}"
        )

    async def call(self, method: str, url: str, body: Any = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.issuer.token(self.owner)}"}
        async with httpx.AsyncClient(timeout=60) as http:
            return await http.request(method, url, json=body, headers=headers, params=API if "?" not in url else None)


async def _owner(stores: Stores, devhost: Devhost, issuer: TestIssuer, registry: str) -> Arm:
    owner = str(uuid.uuid4())
    await assign_role(stores.metadata, registry, owner, "Owner", tenant=issuer.tenant)
    return Arm(devhost, issuer, owner)


async def _push_small_images(devhost: Devhost, registry: str, count: int) -> dict[str, bytes]:
    """`count` images over four repositories, each a config of its own and a manifest kept inline (pushed
    4 at a time)."""
    configs: dict[str, bytes] = {}
    port = devhost.host.rsplit(":", 1)[1]
    slots = asyncio.Semaphore(4)  # 16 at once: 500s from the storage-usage document (main)

    async def push(http: httpx.AsyncClient, i: int) -> None:
        repository = f"team/app{i % 4}"
        config = json.dumps({"architecture": "amd64", "os": "linux", "n": i, "r": uuid.uuid4().hex}).encode()
        digest = "sha256:" + hashlib.sha256(config).hexdigest()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": digest,
                    "size": len(config),
                },
                "layers": [],
            }
        ).encode()
        async with slots:
            reply = await http.post(f"/v2/{repository}/blobs/uploads/", params={"digest": digest}, content=config)
            assert reply.status_code == 201, reply.text
            headers = {"Content-Type": OCI_MANIFEST}
            reply = await http.put(f"/v2/{repository}/manifests/v{i}", content=manifest, headers=headers)
            assert reply.status_code == 201, reply.text
        configs[digest] = config

    headers = {"Host": f"{registry}.azurecr.localhost:{port}"}
    async with httpx.AsyncClient(base_url=devhost.url, headers=headers, timeout=120) as http:
        await asyncio.gather(*(push(http, i) for i in range(count)))
    return configs


async def test_a_new_replica_is_backfilled_with_progress_resumably_and_a_rerun_copies_nothing(
    geo_devhost: Devhost, stores: Stores, entra_issuer: TestIssuer, worker: ReplicationWorker
) -> None:
    registry = await geo_registry(stores, regions=("westeurope",))
    configs = await _push_small_images(geo_devhost, registry, IMAGES)
    arm = await _owner(stores, geo_devhost, entra_issuer, registry)
    made = await arm.call("PUT", arm.path(registry, "eastus"), {"location": "eastus"})
    assert made.status_code == 201, made.text
    assert made.json()["properties"]["status"]["displayStatus"] == "Syncing"
    seen: list[tuple[str, int, int | None]] = []
    for _ in range(600):
        body = (await arm.call("GET", arm.path(registry, "eastus"))).json()["properties"]
        backfill_state = body.get("backfill") or {"done": 0, "total": None}
        seen.append((body["status"]["displayStatus"], backfill_state["done"], backfill_state["total"]))
        if body["status"]["displayStatus"] == "Ready":
            break
        await asyncio.sleep(0.05)
    assert seen[-1] == ("Ready", IMAGES, IMAGES), seen[-5:]
    done = [d for _, d, _ in seen]
    assert done == sorted(done)  # progress only grows
    found = await regional_blobs(settings_from_env(geo_devhost.env), registry, list(configs))
    assert found["eastus"] == configs
    statuses = ImageStatusStore(stores.metadata)
    tags = await worker.artifacts.get_tag(repo_key(registry, "team/app1"), "v1")
    assert tags is not None
    status = await statuses.get(repo_key(registry, "team/app1"), tags.digest)
    assert status is not None and status.regions["eastus"].state == "copied"

    replicas = ReplicationStore(stores.metadata)
    await replicas.set_fields(registry, "eastus", {"syncing": True, "backfillCursor": None})
    again = await backfill(worker, registry, "eastus")  # run again: everything is there
    assert again.finished and again.images == IMAGES and again.copied == 0

    # a runner that died halfway (its lease long gone) is resumed from where it stopped
    doc = await replicas.get(registry, "eastus")
    assert doc is not None
    repositories = sorted(await worker.artifacts.all_repositories(registry))
    middle = sorted(
        item["digest"] for item in await worker.artifacts.all_of(repo_key(registry, repositories[1]), "manifest")
    )[-1]
    stale = {
        "syncing": True,
        "backfillDone": 100,
        "backfillCursor": f"{repositories[1]} {middle}",
        "backfillLease": "2020-01-01T00:00:00.000Z",
    }
    await replicas.set_fields(registry, "eastus", stale)
    assert await resume_jobs(worker) >= 1
    doc = await replicas.get(registry, "eastus")
    assert doc is not None and not doc.syncing and doc.backfillDone == IMAGES and doc.backfillCursor is None


async def test_removing_a_replica_deletes_its_copies(
    geo_devhost: Devhost, stores: Stores, entra_issuer: TestIssuer
) -> None:
    registry = await geo_registry(stores)
    with registry_client(geo_devhost, registry) as http:
        pushed = push_multi_platform(http, "app", "v1", layer_bytes=4096)
    await wait_replicated(stores, registry, "app", pushed.index)
    arm = await _owner(stores, geo_devhost, entra_issuer, registry)
    removed = await arm.call("DELETE", arm.path(registry, "japaneast"))
    assert removed.status_code == 202, removed.text
    for _ in range(300):
        state = (await arm.call("GET", removed.headers["Azure-AsyncOperation"])).json()["status"]
        if state != "InProgress":
            break
        await asyncio.sleep(0.1)
    assert state == "Succeeded"
    found = await regional_blobs(settings_from_env(geo_devhost.env), registry, list(pushed.blobs))
    assert all(data is None for data in found["japaneast"].values())  # its copies are gone
    assert found["eastus"] == pushed.blobs and found["westeurope"] == pushed.blobs  # the others' stay
    status = await ImageStatusStore(stores.metadata).get(repo_key(registry, "app"), pushed.index)
    assert status is not None and set(status.regions) == {"westeurope", "eastus"}
    assert (await arm.call("GET", arm.path(registry, "japaneast"))).status_code == 404


async def test_webhooks_get_replicated_and_per_region_push_events(geo_devhost: Devhost, stores: Stores) -> None:
    registry = await geo_registry(stores)
    with WebhookReceiver() as receiver:
        for name, location, actions in (
            ("homehook", "westeurope", ["push"]),
            ("easthook", "East US", ["push"]),
            ("geohook", "westeurope", ["replicated"]),
        ):
            changes = WebhookChanges(service_uri=f"{receiver.url}/{name}", actions=actions, location=location)
            await put_webhook(stores.metadata, registry, name, changes)
        with registry_client(geo_devhost, registry) as http:
            pushed = push_multi_platform(http, "app", "v1", layer_bytes=4096)
        replicated_index = lambda r: [e for e in r.events("/geohook") if e["target"]["digest"] == pushed.index]  # noqa: E731
        receiver.wait_for(lambda r: len(replicated_index(r)) == 2, timeout=60)
        receiver.wait_for(
            lambda r: any(e["target"]["digest"] == pushed.index for e in r.events("/easthook")), timeout=60
        )
        home = [e for e in receiver.events("/homehook") if e["target"]["digest"] == pushed.index]
        east = [e for e in receiver.events("/easthook") if e["target"]["digest"] == pushed.index]
    assert [(e["action"], e["target"]["tag"], e.get("region")) for e in home] == [("push", "v1", None)]
    assert [(e["action"], e["target"]["tag"], e["region"]) for e in east] == [("push", "v1", "eastus")]
    events = sorted(replicated_index(receiver), key=lambda e: e["region"])
    assert [
        (e["action"], e["registry"], e["region"], e["target"]["repository"], e["target"]["tag"]) for e in events
    ] == [
        ("replicated", registry, "eastus", "app", "v1"),
        ("replicated", registry, "japaneast", "app", "v1"),
    ]
    assert all(isinstance(e["lagMs"], int) and e["lagMs"] >= 0 for e in events)
