"""The replication worker (issue 12, step 3), against three regional Azurite accounts and the Cosmos DB
emulator: a pushed multi-platform image reaches every region byte for byte through the devhost's worker on
the `replication` subscription; its per-region status is readable on /acr/v1; running again copies
nothing; a region that fails stays pending (then failed on the last delivery) while the others go on, and
catches up once reachable; a delete drops the status."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.devhost.stack import LocalStack, free_port
from services.management.access import assign_role
from services.management.store import LOCAL_RESOURCE_GROUP, LOCAL_SUBSCRIPTION
from services.platform.settings import azurite_connection_string
from services.registry.store import repo_key
from services.replication.store import ImageStatusStore, RegionCopy
from services.replication.worker import ReplicationIncomplete, ReplicationWorker
from tests.conftest import GEO_REGIONS, Devhost, running_devhost
from tests.entra_issuer import TestIssuer
from tests.integration.conftest import Stores, registry_client, settings_from_env
from tests.integration.geo import geo_devhost_env, geo_registry, push_multi_platform, regional_blobs, wait_replicated

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def geo_devhost(
    local_stack: LocalStack, entra_issuer: TestIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Devhost]:
    with running_devhost(geo_devhost_env(local_stack, entra_issuer), tmp_path_factory.mktemp("geo-devhost")) as host:
        yield host


@pytest.fixture
async def worker(geo_devhost: Devhost) -> AsyncIterator[ReplicationWorker]:
    """A worker in this process, with the devhost's settings (for the runs a test drives itself)."""
    instance = ReplicationWorker(settings_from_env(geo_devhost.env))
    await instance.open()
    yield instance
    await instance.close()


async def _etags(worker: ReplicationWorker, registry: str, region: str, digests: list[str]) -> dict[str, str]:
    store = await worker.regions.store(region)
    container = store._container(registry)  # the test looks at Storage itself: was anything rewritten?
    return {
        d: (await container.get_blob_client(f"blobs/sha256/{d[7:9]}/{d[7:]}").get_blob_properties()).etag
        for d in digests
    }


async def test_a_push_reaches_every_region_with_its_status_on_acr_v1(geo_devhost: Devhost, stores: Stores) -> None:
    registry = await geo_registry(stores)
    with registry_client(geo_devhost, registry) as http:
        pushed = push_multi_platform(http, "team/app", "v1")
        status = await wait_replicated(stores, registry, "team/app", pushed.index)
        for child in pushed.manifests:  # each platform's manifest was pushed by digest: replicated on its own
            await wait_replicated(stores, registry, "team/app", child)
        attributes = http.get(f"/acr/v1/team/app/_manifests/{pushed.index}")
    assert attributes.status_code == 200, attributes.text
    shown = attributes.json()["manifest"]["replication"]
    assert set(shown["regions"]) == set(GEO_REGIONS) and shown["pushed"] == status.pushed
    assert shown["regions"]["westeurope"] == {"state": "copied", "time": status.pushed, "lagMs": 0, "attempts": 0}
    for region in ("eastus", "japaneast"):
        entry = shown["regions"][region]
        assert entry["state"] == "copied" and entry["lagMs"] >= 0 and entry["time"] >= status.pushed
    found = await regional_blobs(settings_from_env(geo_devhost.env), registry, list(pushed.blobs))
    for region in GEO_REGIONS:
        assert found[region] == pushed.blobs, region  # every blob, byte for byte, in every region


async def test_running_again_copies_nothing_and_a_lost_copy_is_made_again(
    geo_devhost: Devhost, stores: Stores, worker: ReplicationWorker
) -> None:
    registry = await geo_registry(stores)
    with registry_client(geo_devhost, registry) as http:
        pushed = push_multi_platform(http, "app", "v1")
    status = await wait_replicated(stores, registry, "app", pushed.index)
    digests = list(pushed.blobs)
    before = await _etags(worker, registry, "eastus", digests)
    await worker.replicate(registry, "app", pushed.index, status.pushed)  # every region copied: skipped
    repo = repo_key(registry, "app")
    await ImageStatusStore(stores.metadata).set_region(repo, pushed.index, "eastus", RegionCopy())
    await worker.replicate(registry, "app", pushed.index, status.pushed)  # pending again: blobs are all there
    assert await _etags(worker, registry, "eastus", digests) == before
    lost = next(d for d in digests if len(pushed.blobs[d]) > 100_000)
    await (await worker.regions.store("eastus")).delete(registry, lost)
    await ImageStatusStore(stores.metadata).set_region(repo, pushed.index, "eastus", RegionCopy())
    await worker.replicate(registry, "app", pushed.index, status.pushed)
    after = await _etags(worker, registry, "eastus", digests)
    assert [d for d in digests if after[d] != before[d]] == [lost]
    eastus = await worker.regions.store("eastus")
    assert await eastus.read_all(registry, lost) == pushed.blobs[lost]
    staged = [b.name async for b in eastus._container(registry).list_blobs(name_starts_with="replicating/")]
    assert staged == []  # nothing half-copied left behind


async def test_an_unreachable_region_stays_pending_then_fails_while_the_others_go_on_and_later_catches_up(
    geo_devhost: Devhost, stores: Stores, local_stack: LocalStack
) -> None:
    registry = await geo_registry(stores)
    with registry_client(geo_devhost, registry) as http:
        pushed = push_multi_platform(http, "app", "v1")
    status = await wait_replicated(stores, registry, "app", pushed.index)  # the devhost's worker did it all
    repo = repo_key(registry, "app")
    statuses = ImageStatusStore(stores.metadata)
    # the same image again, as a worker whose japaneast account does not answer would see it
    for region in ("eastus", "japaneast"):
        await statuses.set_region(repo, pushed.index, region, RegionCopy())
    accounts = json.loads(geo_devhost.env["REGION_STORAGE"])
    accounts["japaneast"] = azurite_connection_string(free_port(), account="acrjapaneast")  # nothing listens
    broken = settings_from_env(geo_devhost.env | {"REGION_STORAGE": json.dumps(accounts)})
    worker = ReplicationWorker(broken)
    await worker.open()
    try:
        await (await worker.regions.store("eastus")).delete(registry, pushed.manifests[0])
        with pytest.raises(ReplicationIncomplete, match="japaneast"):
            await worker.replicate(registry, "app", pushed.index, status.pushed)
        now = await statuses.get(repo, pushed.index)
        assert now is not None and now.regions["eastus"].state == "copied"  # the others went on
        japan = now.regions["japaneast"]
        assert japan.state == "pending" and japan.attempts == 1 and japan.reason
        with pytest.raises(ReplicationIncomplete):
            await worker.replicate(registry, "app", pushed.index, status.pushed, final=True)
        now = await statuses.get(repo, pushed.index)
        assert now is not None and now.regions["japaneast"].state == "failed" and now.regions["japaneast"].attempts == 2
    finally:
        await worker.close()
    healthy = ReplicationWorker(settings_from_env(geo_devhost.env))
    await healthy.open()
    try:  # reachable again (a redelivery, or the backfill): it catches up
        await statuses.set_region(repo, pushed.index, "japaneast", RegionCopy(attempts=2))
        await healthy.replicate(registry, "app", pushed.index, status.pushed)
    finally:
        await healthy.close()
    now = await statuses.get(repo, pushed.index)
    assert now is not None and now.regions["japaneast"].state == "copied"
    found = await regional_blobs(settings_from_env(geo_devhost.env), registry, list(pushed.blobs))
    assert found["eastus"] == pushed.blobs and found["japaneast"] == pushed.blobs


async def test_a_delete_drops_the_status(geo_devhost: Devhost, stores: Stores) -> None:
    registry = await geo_registry(stores)
    with registry_client(geo_devhost, registry) as http:
        pushed = push_multi_platform(http, "app", "v1")
        await wait_replicated(stores, registry, "app", pushed.index)
        assert http.delete(f"/v2/app/manifests/{pushed.index}").status_code == 202
    statuses = ImageStatusStore(stores.metadata)
    for _ in range(300):
        if await statuses.get(repo_key(registry, "app"), pushed.index) is None:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the deleted image's status is still there")


async def test_acr_replication_status_shows_each_region(
    geo_devhost: Devhost, stores: Stores, entra_issuer: TestIssuer, tmp_path: Path
) -> None:
    registry = await geo_registry(stores)
    owner = str(uuid.uuid4())
    await assign_role(stores.metadata, registry, owner, "Owner", tenant=entra_issuer.tenant)
    with registry_client(geo_devhost, registry) as http:
        pushed = push_multi_platform(http, "team/app", "v1", layer_bytes=4096)
    await wait_replicated(stores, registry, "team/app", pushed.index)
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("ACR_", "HTTP_PROXY", "HTTPS_PROXY"))}
    env |= {
        "HOME": str(tmp_path),
        "ACR_CONFIG": str(tmp_path / "acr.json"),
        "ACR_ENDPOINT": geo_devhost.url,
        "ACR_SUBSCRIPTION": LOCAL_SUBSCRIPTION,
        "ACR_RESOURCE_GROUP": LOCAL_RESOURCE_GROUP,
        "ACR_TOKEN": entra_issuer.token(owner, lifetime=600),
    }
    acr = [str(Path(sys.executable).parent / "acr"), "replication", "status", "-r", registry]
    shown = await asyncio.to_thread(_run, [*acr, "team/app:v1"], env)
    assert shown.returncode == 0, shown.stderr
    body = json.loads(shown.stdout)
    assert body["image"] == f"team/app@{pushed.index}"
    assert {region: entry["state"] for region, entry in body["regions"].items()} == dict.fromkeys(GEO_REGIONS, "copied")
    table = await asyncio.to_thread(_run, [*acr, f"team/app@{pushed.index}", "-o", "table"], env)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["Region", "State", "Time"]
    assert sorted(line.split()[0] for line in lines[2:]) == sorted(GEO_REGIONS)


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
