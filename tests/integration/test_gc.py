"""Online garbage collection (services/registry/collector.py) against Azurite and the Cosmos emulator: what
is collected and what is kept, pushes racing the collector over many rounds, a collector SIGKILLed midway,
uploads taking back a blob being collected, and the management actions that run it."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob.aio import BlobServiceClient

from services.management.access import assign_role
from services.management.registries import create_registry
from services.platform.blobs import BlobStore, container_name
from services.platform.cosmos import Cosmos
from services.platform.settings import Settings
from services.registry.collector import GarbageCollector, recount_storage
from services.registry.ledger import BlobLedger
from services.registry.store import ArtifactStore, repo_key
from services.registry.uploads import expire_uploads
from tests.conftest import ROOT, Devhost
from tests.entra_issuer import TestIssuer
from tests.integration.conftest import Stores, unique_registry_name

pytestmark = pytest.mark.integration

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def manifest_of(config: bytes, layers: list[bytes]) -> bytes:
    def descriptor(media_type: str, data: bytes) -> dict[str, Any]:
        return {"mediaType": media_type, "digest": digest_of(data), "size": len(data)}

    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": descriptor(OCI_CONFIG, config),
        "layers": [descriptor(OCI_LAYER, layer) for layer in layers],
    }
    return json.dumps(body).encode()


def collector_settings(stores: Stores, **changes: Any) -> Settings:
    return stores.settings.model_copy(update={"gc_grace_seconds": 0.0, "gc_lease_seconds": 1.0} | changes)


def collector(stores: Stores, **changes: Any) -> GarbageCollector:
    return GarbageCollector(collector_settings(stores, **changes), stores.metadata, stores.blobs)


async def stored_in_storage(stores: Stores, registry: str) -> set[str]:
    """What Blob Storage holds under blobs/ (the tests' own check; the collector never lists storage)."""
    found: set[str] = set()
    async with BlobServiceClient.from_connection_string(stores.settings.blob_connection_string) as service:
        async for blob in service.get_container_client(container_name(registry)).list_blobs(name_starts_with="blobs/"):
            _, algorithm, _, hexpart = blob.name.split("/")
            found.add(f"{algorithm}:{hexpart}")
    return found


async def ledger_digests(stores: Stores, registry: str) -> dict[str, int]:
    return {doc.digest: doc.size async for doc in BlobLedger(stores.metadata).all_stored(registry)}


@dataclass
class Pusher:
    """Pushes images over HTTP as a client does: HEAD each blob, upload what is missing, PUT the manifest;
    told MANIFEST_BLOB_UNKNOWN (a blob collected meanwhile), it uploads again."""

    http: httpx.AsyncClient
    told_again: int = 0

    async def push(self, repo: str, tag: str, config: bytes, layers: list[bytes]) -> str:
        manifest = manifest_of(config, layers)
        for _ in range(20):
            for data in (config, *layers):
                head = await self.http.head(f"/v2/{repo}/blobs/{digest_of(data)}")
                if head.status_code != 200:
                    made = await self.http.post(
                        f"/v2/{repo}/blobs/uploads/", params={"digest": digest_of(data)}, content=data
                    )
                    assert made.status_code == 201, made.text
            reply = await self.http.put(
                f"/v2/{repo}/manifests/{tag}", content=manifest, headers={"Content-Type": OCI_MANIFEST}
            )
            if reply.status_code == 201:
                return digest_of(manifest)
            assert reply.status_code in (400, 503), reply.text
            if reply.status_code == 400:
                assert reply.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN", reply.text
                self.told_again += 1
        raise AssertionError(f"{repo}:{tag} never got pushed")


@pytest.fixture
async def gc_registry(devhost: Devhost, stores: Stores) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    from services.management.access import update_registry

    name = unique_registry_name()
    await create_registry(stores.metadata, stores.blobs, stores.settings, name)
    await update_registry(stores.metadata, name, auth_disabled=True)
    port = devhost.host.rsplit(":", 1)[1]
    limits = httpx.Limits(max_connections=16)
    headers = {"Host": f"{name}.azurecr.localhost:{port}"}
    async with httpx.AsyncClient(base_url=devhost.url, headers=headers, timeout=60, limits=limits) as http:
        yield name, http


async def test_collects_what_no_manifest_needs_and_keeps_the_rest(
    gc_registry: tuple[str, httpx.AsyncClient], stores: Stores
) -> None:
    name, http = gc_registry
    pusher = Pusher(http)
    shared, kept_only, dropped_only, config = (os.urandom(3_000 + i) for i in range(4))
    kept = await pusher.push("app/kept", "v1", config, [shared, kept_only])
    dropped = await pusher.push("app/dropped", "v1", config, [shared, dropped_only])
    stray = os.urandom(2_000)  # uploaded, never referenced
    assert (
        await http.post("/v2/app/kept/blobs/uploads/", params={"digest": digest_of(stray)}, content=stray)
    ).status_code == 201
    assert (await http.delete(f"/v2/app/dropped/manifests/{dropped}")).status_code == 202
    garbage = {digest_of(dropped_only), digest_of(stray)}
    needed = {digest_of(shared), digest_of(kept_only), digest_of(config)}

    # the default grace period (an hour) protects everything that was just pushed
    assert (await collector(stores, gc_grace_seconds=3600.0).run(name)).deleted == 0
    preview = await collector(stores).run(name, dry_run=True)
    assert set(preview.digests) == garbage and preview.deleted == 2 and preview.referenced == 3, (
        preview,
        garbage,
        [(d.digest, d.due, d.state, d.pinned) async for d in BlobLedger(stores.metadata).all_stored(name)],
    )
    assert await stored_in_storage(stores, name) == garbage | needed  # a dry run deletes nothing

    report = await collector(stores).run(name)
    assert set(report.digests) == garbage and report.bytes_freed == len(dropped_only) + len(stray)
    assert await stored_in_storage(stores, name) == needed
    assert set(await ledger_digests(stores, name)) == needed
    usage = await BlobLedger(stores.metadata).storage_bytes(name)
    assert (
        usage
        == len(shared) + len(kept_only) + len(config)
        == (await recount_storage(BlobLedger(stores.metadata), name)).storage_bytes
    )
    # the links went with the bytes: the stray blob is unknown, the kept image still pulls
    assert (await http.head(f"/v2/app/kept/blobs/{digest_of(stray)}")).status_code == 404
    assert (await http.head(f"/v2/app/dropped/blobs/{digest_of(dropped_only)}")).status_code == 404
    assert (await http.get(f"/v2/app/kept/manifests/{kept}")).status_code == 200
    for data in (shared, kept_only, config):
        assert (await http.head(f"/v2/app/kept/blobs/{digest_of(data)}")).status_code == 200
    # a second run finds nothing more
    assert (await collector(stores).run(name)).deleted == 0


async def test_pushes_racing_the_collector_never_leave_a_manifest_without_its_blobs(
    gc_registry: tuple[str, httpx.AsyncClient], stores: Stores
) -> None:
    name, http = gc_registry
    pool = [os.urandom(1_000 + i) for i in range(8)]  # layers every round reuses
    pushed: dict[tuple[str, str], tuple[str, list[bytes]]] = {}
    pushers = [Pusher(http) for _ in range(4)]
    stop = asyncio.Event()
    runs = collected = 0

    async def collect_continuously() -> None:
        # A grace period of a second or two (what a push takes from its first upload to its manifest here,
        # longer on a loaded machine); with less, the collector, which takes a whole page in a few batches,
        # collects every fresh upload before its manifest comes, and a push only retries (a live-lock of
        # the test's making: the safety checked below holds whatever the grace).
        nonlocal runs, collected
        while not stop.is_set():
            collected += (await collector(stores, gc_grace_seconds=1.0).run(name)).deleted
            runs += 1
            await asyncio.sleep(0.05)

    async def round_of(index: int, pusher: Pusher, round_number: int) -> None:
        repo = f"race/r{index % 2}"
        for step in range(3):
            layers = [pool[(round_number + step + index) % len(pool)], pool[(index * 3 + step) % len(pool)]]
            if step == 2:
                layers.append(os.urandom(500))  # one fresh layer too
            config = f'{{"round": {round_number}, "pusher": {index}, "step": {step}}}'.encode()
            tag = f"t{index}-{step}"
            digest = await pusher.push(repo, tag, config, layers)
            pushed[(repo, tag)] = (digest, [config, *layers])
        # delete one manifest of this pusher's, so its blobs may become garbage again
        victim = (repo, f"t{index}-{round_number % 3}")
        digest, _ = pushed.pop(victim)
        assert (await http.delete(f"/v2/{repo}/manifests/{digest}")).status_code == 202

    task = asyncio.create_task(collect_continuously())
    try:
        for round_number in range(4):
            await asyncio.gather(*(round_of(i, p, round_number) for i, p in enumerate(pushers)))
    finally:
        stop.set()
        await task
    assert runs >= 3  # the collector really ran during the pushes

    # every manifest of the registry (tags moved on leave older ones untagged) pulls whole: the manifest,
    # then each of its blobs, the bytes fetched and verified
    needed: dict[str, int] = {}
    artifacts = ArtifactStore(stores.metadata)
    async with httpx.AsyncClient(timeout=60) as storage:
        for repo in ("race/r0", "race/r1"):
            manifests = await artifacts.all_of(repo_key(name, repo), "manifest")
            assert len(manifests) >= 6
            for manifest in manifests:
                reply = await http.get(f"/v2/{repo}/manifests/{manifest['digest']}", headers={"Accept": OCI_MANIFEST})
                assert reply.status_code == 200 and digest_of(reply.content) == manifest["digest"]
                body = json.loads(reply.content)
                for descriptor in (body["config"], *body["layers"]):
                    blob = await http.get(f"/v2/{repo}/blobs/{descriptor['digest']}")
                    assert blob.status_code == 307, f"{repo}@{manifest['digest']} lost {descriptor['digest']}"
                    fetched = await storage.get(blob.headers["Location"])
                    assert fetched.status_code == 200 and digest_of(fetched.content) == descriptor["digest"]
                    needed[descriptor["digest"]] = descriptor["size"]
    for (repo, tag), (digest, _) in pushed.items():
        assert (await http.head(f"/v2/{repo}/manifests/{tag}")).headers["Docker-Content-Digest"] == digest

    # once the pushes stop, one more run leaves exactly what the manifests need: no true garbage survives
    await collector(stores).run(name)
    told_again = sum(pusher.told_again for pusher in pushers)
    print(f"race: {runs} collections, {collected} blobs collected meanwhile, {told_again} pushes told to upload again")
    assert collected > 0  # the collector deleted blobs while the pushes were going on
    assert await stored_in_storage(stores, name) == set(needed)
    assert await ledger_digests(stores, name) == needed
    assert await BlobLedger(stores.metadata).storage_bytes(name) == sum(needed.values())


KILLED_COLLECTOR = """
import asyncio, os, signal, sys
from services.platform.blobs import BlobStore
from services.platform.cosmos import Cosmos
from services.platform.settings import Settings
from services.registry.collector import GarbageCollector

async def main() -> None:
    settings = Settings()
    cosmos, blobs = Cosmos(settings), BlobStore(settings)
    await cosmos.open()
    await blobs.open()
    point, calls = sys.argv[2], 0
    # The collector SIGKILLs itself at the point named (a crash, not a mock: every call still goes through)
    if point == "bytes":  # before its 10th byte delete: blobs `deleting`, some bytes gone, no document yet
        delete = blobs.delete_if_unchanged

        async def deleting(*args):
            nonlocal calls
            calls += 1
            if calls == 10:
                os.kill(os.getpid(), signal.SIGKILL)
            return await delete(*args)

        blobs.delete_if_unchanged = deleting
    else:  # right after a batch of its kind committed: "links" (link deletes), "documents" (usage change)
        batch = cosmos.batch

        async def batching(container, partition, operations):
            results = await batch(container, partition, operations)
            kind = "links" if container == "artifacts" else "documents" if operations[-1][0] == "patch" else ""
            if kind == point:
                os.kill(os.getpid(), signal.SIGKILL)
            return results

        cosmos.batch = batching
    await GarbageCollector(settings, cosmos, blobs).run(sys.argv[1])

asyncio.run(main())
"""


@pytest.mark.parametrize("point", ["links", "bytes", "documents"])
async def test_a_collector_killed_midway_is_resumed_and_counts_each_blob_once(
    gc_registry: tuple[str, httpx.AsyncClient], stores: Stores, devhost: Devhost, point: str
) -> None:
    """SIGKILLed after its first batch of link deletes, in the middle of its byte deletes, or after its first
    batch of document deletes (with their usage change; 150 blobs make two such batches)."""
    name, http = gc_registry
    pusher = Pusher(http)
    keep_layer, keep_config = os.urandom(4_000), os.urandom(300)
    await pusher.push("kill/kept", "v1", keep_config, [keep_layer])
    garbage = [os.urandom(1_000) for _ in range(150)]
    semaphore = asyncio.Semaphore(16)

    async def upload(index: int, data: bytes) -> None:
        async with semaphore:
            repo = f"kill/junk{index % 2}"  # two repositories: two link batches
            made = await http.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest_of(data)}, content=data)
            assert made.status_code == 201, made.text

    await asyncio.gather(*(upload(index, data) for index, data in enumerate(garbage)))
    ledger = BlobLedger(stores.metadata)
    before = await ledger.storage_bytes(name)
    assert before == len(keep_layer) + len(keep_config) + 1_000 * len(garbage)

    env = devhost.env | {
        "GC_GRACE_SECONDS": "0",
        "GC_LEASE_SECONDS": "1",
        "GC_CONCURRENCY": "1",
        "PYTHONPATH": str(ROOT),
    }
    process = subprocess.Popen(  # noqa: ASYNC220 (it runs beside this loop, which waits for it)
        [sys.executable, "-c", KILLED_COLLECTOR, name, point], cwd=ROOT, env=env
    )
    try:
        await asyncio.to_thread(process.wait, 120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL, "the collector was not killed midway"
    left = await ledger_digests(stores, name)
    assert len(left) > 2, "the collector finished before the kill"
    if point == "documents":
        assert len(left) < len(garbage) + 2  # one batch of documents went, with its usage change
    # at any moment, the usage is exactly the sum of what the ledger holds: nothing counted twice or lost
    assert await ledger.storage_bytes(name) == sum(left.values())
    held = [doc async for doc in ledger.all_stored(name) if doc.state != "stored"]
    assert held  # the dead collector's blobs, `collecting` or `deleting`

    await asyncio.sleep(1.1)  # the dead collector's lease runs out
    report = await collector(stores).run(name)
    assert report.deleted == len(left) - 2
    needed = {digest_of(keep_layer): len(keep_layer), digest_of(keep_config): len(keep_config)}
    assert await ledger_digests(stores, name) == needed
    assert await stored_in_storage(stores, name) == set(needed)
    assert await ledger.storage_bytes(name) == len(keep_layer) + len(keep_config)
    recount = await recount_storage(ledger, name)
    assert recount.previous == recount.storage_bytes == len(keep_layer) + len(keep_config)
    assert recount.applied
    # what the killed collector held was taken over
    assert all(doc.digest not in needed for doc in held)
    assert await stores.blobs.read_all(name, digest_of(keep_layer)) == keep_layer


async def test_an_upload_takes_back_a_blob_being_deleted(
    gc_registry: tuple[str, httpx.AsyncClient], stores: Stores
) -> None:
    """A collector between deleting the bytes and deleting the document (step 5): the same content uploaded
    now is written again and kept, and counted once; the collector, resuming, deletes nothing."""
    name, http = gc_registry
    data = os.urandom(5_000)
    digest = digest_of(data)
    assert (await http.post("/v2/up/a/blobs/uploads/", params={"digest": digest}, content=data)).status_code == 201
    ledger = BlobLedger(stores.metadata)
    doc = await ledger.get(name, digest)
    assert doc is not None and doc.state == "stored"
    doc.state, doc.since, doc.storageEtag = "deleting", time.time() - 10, await stores.blobs.etag(name, digest)
    doc = await ledger.replace(doc)
    await stores.blobs.delete(name, digest)
    assert await stores.blobs.size(name, digest) is None
    # a client that still has the link in its repository would push a manifest; one that uploads again:
    assert (await http.post("/v2/up/b/blobs/uploads/", params={"digest": digest}, content=data)).status_code == 201
    assert await stores.blobs.size(name, digest) == len(data)
    again = await ledger.get(name, digest)
    assert again is not None and again.state == "stored"
    report = await collector(stores, gc_grace_seconds=60.0).run(name)
    assert report.deleted == 0 and await stores.blobs.size(name, digest) == len(data)
    assert await ledger.storage_bytes(name) == len(data)


async def test_an_upload_un_marks_a_blob_being_collected(
    gc_registry: tuple[str, httpx.AsyncClient], stores: Stores
) -> None:
    name, http = gc_registry
    data = os.urandom(5_000)
    digest = digest_of(data)
    assert (await http.post("/v2/up/a/blobs/uploads/", params={"digest": digest}, content=data)).status_code == 201
    ledger = BlobLedger(stores.metadata)
    doc = await ledger.get(name, digest)
    assert doc is not None
    doc.state, doc.since = "collecting", time.time()
    marked = await ledger.replace(doc)
    assert (await http.post("/v2/up/b/blobs/uploads/", params={"digest": digest}, content=data)).status_code == 201
    pinned = await ledger.get(name, digest)
    assert pinned is not None and pinned.state == "stored" and pinned.etag != marked.etag
    # the collector holding the old mark cannot move on: its conditional write fails
    marked.state = "deleting"
    with pytest.raises(Exception, match="storedBlob"):
        await ledger.replace(marked)
    link = await ArtifactStore(stores.metadata).get_blob_link(repo_key(name, "up/b"), digest)
    assert link is not None


async def test_a_mount_of_a_blob_being_deleted_falls_back_to_an_upload(
    gc_registry: tuple[str, httpx.AsyncClient], stores: Stores
) -> None:
    name, http = gc_registry
    data = os.urandom(5_000)
    digest = digest_of(data)
    assert (await http.post("/v2/m/a/blobs/uploads/", params={"digest": digest}, content=data)).status_code == 201
    ledger = BlobLedger(stores.metadata)
    doc = await ledger.get(name, digest)
    assert doc is not None
    doc.state, doc.since = "deleting", time.time()
    await ledger.replace(doc)
    reply = await http.post("/v2/m/b/blobs/uploads/", params={"mount": digest, "from": "m/a"})
    assert reply.status_code == 202  # an upload session instead of the mount
    assert await ArtifactStore(stores.metadata).get_blob_link(repo_key(name, "m/b"), digest) is None


async def garbage_in(http: httpx.AsyncClient, repos: list[str], count: int) -> list[tuple[str, bytes]]:
    """`count` blobs uploaded and never referenced, spread over `repos`: (repository, bytes)."""
    made = [(repos[index % len(repos)], os.urandom(700 + index)) for index in range(count)]
    for repo, data in made:
        reply = await http.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest_of(data)}, content=data)
        assert reply.status_code == 201, reply.text
    return made


async def own_collector(stores: Stores) -> tuple[GarbageCollector, Cosmos, BlobStore]:
    """A collector with clients of its own, so that a test can step in between its calls."""
    settings = collector_settings(stores)
    cosmos, blobs = Cosmos(settings), BlobStore(settings)
    await cosmos.open()
    await blobs.open()
    return GarbageCollector(settings, cosmos, blobs), cosmos, blobs


async def test_a_blob_pinned_again_mid_batch_is_kept_and_the_rest_of_its_batch_collected(
    gc_registry: tuple[str, httpx.AsyncClient], stores: Stores
) -> None:
    """An upload of one blob of the page lands after the collector deleted the page's links and before it
    moves the page to `deleting` (one batch): that blob stays (bytes, link, document, usage), the others of
    the same batch are collected."""
    name, http = gc_registry
    made = await garbage_in(http, ["mid/a", "mid/b"], 12)
    repo, data = made[5]
    gc, cosmos, blobs = await own_collector(stores)
    etag = blobs.etag
    uploaded = False

    async def etag_then_upload(registry: str, digest: str) -> str | None:
        nonlocal uploaded
        if not uploaded:  # step 4 has begun: the blob's mark is in the batch about to be written
            uploaded = True
            again = await http.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest_of(data)}, content=data)
            assert again.status_code == 201, again.text
        return await etag(registry, digest)

    blobs.etag = etag_then_upload  # type: ignore[method-assign]
    try:
        report = await gc.run(name)
    finally:
        await cosmos.close()
        await blobs.close()
    assert uploaded and report.deleted == 11 and report.busy == 1, report
    assert await ledger_digests(stores, name) == {digest_of(data): len(data)}
    assert await stored_in_storage(stores, name) == {digest_of(data)}
    assert await stores.blobs.read_all(name, digest_of(data)) == data
    assert await ArtifactStore(stores.metadata).get_blob_link(repo_key(name, repo), digest_of(data)) is not None
    assert await BlobLedger(stores.metadata).storage_bytes(name) == len(data)
    # once its grace is over (none here) and it is still unreferenced, the next collection takes it
    assert (await collector(stores).run(name)).deleted == 1
    assert await BlobLedger(stores.metadata).storage_bytes(name) == 0


async def test_link_batches_lose_only_what_changed(gc_registry: tuple[str, httpx.AsyncClient], stores: Stores) -> None:
    """Between the collector's reference check and its link deletes, one link is made again in one
    repository and a manifest is pushed in another: the batch of the first repository deletes its other
    links (the changed one is peeled off), the second repository keeps every link (its fence moved), the
    third is collected whole. Nothing a manifest needs is lost."""
    name, http = gc_registry
    made = await garbage_in(http, ["lb/remade", "lb/pushed", "lb/quiet"], 15)
    remade_repo, remade = next(item for item in made if item[0] == "lb/remade")
    gc, cosmos, blobs = await own_collector(stores)
    query_across = cosmos.query_across
    stepped_in = False

    def query_then_interfere(container: str, sql: str, params: Any = None, page: Any = None) -> AsyncIterator[Any]:
        async def run() -> AsyncIterator[Any]:
            nonlocal stepped_in
            async for item in query_across(container, sql, params, page):
                yield item
            if "JOIN b IN c.blobs" in sql and not stepped_in:  # the reference check (step 2) is done
                stepped_in = True
                again = await http.post(
                    f"/v2/{remade_repo}/blobs/uploads/", params={"digest": digest_of(remade)}, content=remade
                )
                assert again.status_code == 201, again.text
                await Pusher(http).push("lb/pushed", "v1", os.urandom(100), [os.urandom(200)])

        return run()

    cosmos.query_across = query_then_interfere  # type: ignore[method-assign]
    try:
        report = await gc.run(name)
    finally:
        await cosmos.close()
        await blobs.close()
    assert stepped_in
    kept = {digest_of(remade)} | {digest_of(data) for repo, data in made if repo == "lb/pushed"}
    assert report.deleted == 15 - len(kept) and report.busy == len(kept), report
    left = await ledger_digests(stores, name)
    assert kept <= set(left) and len(left) == len(kept) + 2  # and the pushed image's config and layer
    assert await stored_in_storage(stores, name) == set(left)
    assert await BlobLedger(stores.metadata).storage_bytes(name) == sum(left.values())
    # the kept ones were given back due: with no grace, the next collection takes them (not the image's)
    assert (await collector(stores).run(name)).deleted == len(kept)
    assert len(await ledger_digests(stores, name)) == 2


# --- the management actions ---------------------------------------------------------------------------------
async def test_collect_garbage_and_recount_through_the_management_api(
    devhost: Devhost, stores: Stores, entra_issuer: TestIssuer
) -> None:
    from services.management.access import update_registry

    name = unique_registry_name()
    await create_registry(stores.metadata, stores.blobs, stores.settings, name)
    await update_registry(stores.metadata, name, auth_disabled=True)
    owner, reader = "gc-owner-" + name, "gc-reader-" + name
    await assign_role(stores.metadata, name, owner, "Owner", tenant=entra_issuer.tenant)
    await assign_role(stores.metadata, name, reader, "Reader", tenant=entra_issuer.tenant)
    base = (
        f"{devhost.url}/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/local-rg/providers/"
        f"Microsoft.ContainerRegistry/registries/{name}"
    )
    port = devhost.host.rsplit(":", 1)[1]
    stray = os.urandom(1_234)
    async with httpx.AsyncClient(timeout=60) as http:
        made = await http.post(
            f"{devhost.url}/v2/x/y/blobs/uploads/",
            params={"digest": digest_of(stray)},
            content=stray,
            headers={"Host": f"{name}.azurecr.localhost:{port}"},
        )
        assert made.status_code == 201

        def as_(principal: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {entra_issuer.token(principal)}"}

        params = {"api-version": "2025-11-01"}
        # the devhost's grace period is an hour: the stray blob is too young to go
        preview = await http.post(f"{base}/collectGarbage", params=params, json={"dryRun": True}, headers=as_(owner))
        assert preview.status_code == 200, preview.text
        assert preview.json()["dryRun"] is True and preview.json()["blobsDeleted"] == preview.json()["examined"] == 0
        for headers, status in (({}, 401), (as_(reader), 403), (as_("nobody-" + name), 403)):
            for action in ("collectGarbage", "recountUsage"):
                reply = await http.post(f"{base}/{action}", params=params, json={}, headers=headers)
                assert reply.status_code == status, reply.text
        bad = await http.post(f"{base}/collectGarbage", params=params, json={"dryRun": "perhaps"}, headers=as_(owner))
        assert bad.status_code == 400
        assert (await http.get(f"{base}/collectGarbage", params=params, headers=as_(owner))).status_code == 405
        recount = await http.post(f"{base}/recountUsage", params=params, headers=as_(owner))
        assert recount.status_code == 200, recount.text
        assert recount.json() == {
            "registry": name,
            "blobs": 1,
            "storageBytes": len(stray),
            "previous": len(stray),
            "applied": True,
        }


# --- upload expiry ------------------------------------------------------------------------------------------
async def test_idle_upload_sessions_expire_with_their_staged_blocks(
    gc_registry: tuple[str, httpx.AsyncClient], stores: Stores
) -> None:
    name, http = gc_registry
    idle = await http.post("/v2/up/idle/blobs/uploads/")
    chunk = os.urandom(100_000)
    staged = await http.patch(idle.headers["Location"], content=chunk, headers={"Content-Range": f"0-{len(chunk) - 1}"})
    assert staged.status_code == 202, staged.text
    session = idle.headers["Docker-Upload-UUID"]
    staging = BlobServiceClient.from_connection_string(stores.settings.blob_connection_string)
    async with staging:
        blob = staging.get_container_client(container_name(name)).get_blob_client(f"uploads/{session}")
        uncommitted = (await blob.get_block_list("uncommitted"))[1]
        assert len(uncommitted) == 1  # one staged, uncommitted block
        await asyncio.sleep(2.1)  # Cosmos's `_ts` has whole seconds
        busy = await http.post("/v2/up/busy/blobs/uploads/")  # started just now: not idle
        artifacts = ArtifactStore(stores.metadata)
        assert await expire_uploads(artifacts, stores.blobs, idle_seconds=1.0) >= 1
        gone = await http.get(idle.headers["Location"])
        assert gone.status_code == 404 and gone.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
        with pytest.raises(ResourceNotFoundError):
            await blob.get_block_list("all")
        late = await http.patch(idle.headers["Location"], content=b"more", headers={"Content-Range": "100000-100003"})
        assert late.status_code == 404
        assert (await http.get(busy.headers["Location"])).status_code == 204
        # the default, 24 hours, leaves the fresh session alone
        assert await expire_uploads(artifacts, stores.blobs, idle_seconds=24 * 3600.0) == 0
