"""Lifecycle with real clients: skopeo refused past a storage quota with a clear message, and `acr gc run`
(preview, then the collection) and `acr gc recount` on what a skopeo push and a delete left; `acr purge`;
the retention policy deleting what skopeo left untagged (an explicit clock); an upload curl abandoned
expiring with its staged blocks; `skopeo delete` with soft delete on, `acr manifest list-deleted` and
`acr manifest restore`, and skopeo pulling the same bytes back.

A devhost of its own serves a fresh registry as its default (so skopeo reaches it by address), reads the
registry document afresh on every request (the quota applies at once) and has no grace period."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob.aio import BlobServiceClient

from services.management.access import assign_role, update_registry
from services.management.registries import create_registry
from services.management.store import LOCAL_RESOURCE_GROUP, LOCAL_SUBSCRIPTION, RegistryDoc, RegistryStore
from services.platform.blobs import BlobStore, container_name
from services.platform.cosmos import Cosmos
from services.registry.ledger import BlobLedger
from services.registry.retention import apply_retention
from services.registry.store import ArtifactStore
from services.registry.uploads import expire_uploads
from tests.conftest import Devhost, running_devhost
from tests.e2e.clients import CommandError, Skopeo, build_single_platform_image
from tests.entra_issuer import TestIssuer
from tests.integration.conftest import settings_from_env

ACR = Path(sys.executable).parent / "acr"
STORAGE_OUT_OF_THE_WAY = 10 * 2**30
CURL_PATCH = ("curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PATCH", "--data-binary")


async def _prepare(env: dict[str, str], name: str, owner: str, tenant: str, quota: int) -> None:
    settings = settings_from_env(env)
    cosmos, blobs = Cosmos(settings), BlobStore(settings)
    await cosmos.open()
    await blobs.open()
    try:
        await create_registry(cosmos, blobs, settings, name)
        await update_registry(cosmos, name, auth_disabled=True, storage_quota=quota)
        await assign_role(cosmos, name, owner, "Owner", tenant=tenant)
    finally:
        await cosmos.close()
        await blobs.close()


async def _usage(env: dict[str, str], name: str) -> int:
    cosmos = Cosmos(settings_from_env(env))
    await cosmos.open()
    try:
        return await BlobLedger(cosmos).storage_bytes(name)
    finally:
        await cosmos.close()


@pytest.fixture(scope="module")
def lifecycle_host(
    devhost: Devhost, entra_issuer: TestIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Devhost, str, str]]:
    name, owner = "life" + uuid.uuid4().hex[:12], str(uuid.uuid4())
    asyncio.run(_prepare(devhost.env, name, owner, entra_issuer.tenant, quota=400_000))
    env = devhost.env | {"DEFAULT_REGISTRY": name, "AUTH_CACHE_SECONDS": "0", "GC_GRACE_SECONDS": "0"}
    with running_devhost(env, tmp_path_factory.mktemp("lifecycle")) as host:
        yield host, name, entra_issuer.token(owner, lifetime=3600)


def _acr(host: Devhost, token: str, tmp_path: Path, *args: str) -> object:
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "ACR_CONFIG": str(tmp_path / "acr-config.json"),
        "ACR_ENDPOINT": host.url,
        "ACR_SUBSCRIPTION": LOCAL_SUBSCRIPTION,
        "ACR_RESOURCE_GROUP": LOCAL_RESOURCE_GROUP,
        "ACR_TOKEN": token,
    } | {k: v for k, v in host.env.items() if k == "PYTHONPATH"}
    done = subprocess.run([str(ACR), *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_skopeo_is_refused_past_the_storage_quota_and_gc_frees_room(
    lifecycle_host: tuple[Devhost, str, str], skopeo: Skopeo, tmp_path: Path
) -> None:
    host, name, token = lifecycle_host
    # 300 kB fits under the 400 kB quota; a second image of 300 kB does not
    first, _ = build_single_platform_image(tmp_path / "first", [300_000], tag="v1")
    skopeo.copy(first.reference("v1"), f"docker://{host.host}/app:v1")
    second, _ = build_single_platform_image(tmp_path / "second", [300_000], tag="v2")
    with pytest.raises(CommandError) as refused:
        skopeo.copy(second.reference("v2"), f"docker://{host.host}/app:v2")
    assert "DENIED" in refused.value.stderr or "denied" in refused.value.stderr
    assert "storage quota exceeded" in refused.value.stderr
    used = asyncio.run(_usage(host.env, name))
    assert 300_000 < used < 400_000  # nothing of the refused image was stored

    # delete the first image: `acr gc run --dry-run` names its blobs, `acr gc run` frees them
    with httpx.Client(base_url=host.url, timeout=30) as http:
        digest = http.head("/v2/app/manifests/v1", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert http.delete(f"/v2/app/manifests/{digest.headers['Docker-Content-Digest']}").status_code == 202
    preview = _acr(host, token, tmp_path, "gc", "run", "-n", name, "--dry-run")
    assert isinstance(preview, dict) and preview["dryRun"] is True and preview["blobsDeleted"] >= 2
    assert asyncio.run(_usage(host.env, name)) == used
    report = _acr(host, token, tmp_path, "gc", "run", "-n", name)
    assert (
        isinstance(report, dict) and report["blobsDeleted"] == preview["blobsDeleted"] and report["bytesFreed"] == used
    )
    assert asyncio.run(_usage(host.env, name)) == 0
    recount = _acr(host, token, tmp_path, "gc", "recount", "-n", name)
    assert recount == {"registry": name, "blobs": 0, "storageBytes": 0, "previous": 0, "applied": True}

    # the room is back: the second image goes in now
    skopeo.copy(second.reference("v2"), f"docker://{host.host}/app:v2")
    usage = _acr(host, token, tmp_path, "show-usage", "-n", name)
    assert isinstance(usage, dict)
    size = next(u for u in usage["value"] if u["name"] == "Size")
    assert size["limit"] == 400_000 and 300_000 < size["currentValue"] < 400_000


def _push_small(http: httpx.Client, repo: str, tag: str) -> str:
    layer, config = os.urandom(500), os.urandom(50)
    for data in (layer, config):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        assert http.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data).status_code == 201
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": "sha256:" + hashlib.sha256(layer).hexdigest(),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    reply = http.put(
        f"/v2/{repo}/manifests/{tag}",
        content=manifest,
        headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"},
    )
    assert reply.status_code == 201, reply.text
    return "sha256:" + hashlib.sha256(manifest).hexdigest()


def test_acr_purge_keeps_the_latest_honours_locks_and_previews(
    lifecycle_host: tuple[Devhost, str, str], tmp_path: Path
) -> None:
    host, name, token = lifecycle_host
    with httpx.Client(base_url=host.url, timeout=30) as http:
        digests = {"v1": _push_small(http, "purge/app", "v1")}
        # locked first (an attribute change counts as an update), so that it stays the oldest
        locked = http.patch("/acr/v1/purge/app/_tags/v1", json={"deleteEnabled": False})
        assert locked.status_code == 200, locked.text
        for tag in ("v2", "v3", "v4", "keep-me"):
            digests[tag] = _push_small(http, "purge/app", tag)
        other = _push_small(http, "other/app", "v1")  # a repository the filter does not match
        untagged = _push_small(http, "purge/app", "scratch")
        assert http.delete("/v2/purge/app/manifests/scratch").status_code == 202

    preview = _acr(
        host,
        token,
        tmp_path,
        "purge",
        "-n",
        name,
        "--filter",
        "purge/.*:v.*",
        "--ago",
        "0",
        "--keep",
        "1",
        "--untagged",
        "--dry-run",
    )
    assert isinstance(preview, list)
    assert all(row["result"] == "would delete" for row in preview)
    assert {row["tag"] for row in preview if row["tag"]} == {"v1", "v2", "v3"}  # v1's lock shows when deleting
    # untagged: the scratch manifest and those the tag deletes would leave untagged
    assert {row["digest"] for row in preview if not row["tag"]} == {
        untagged,
        digests["v1"],
        digests["v2"],
        digests["v3"],
    }
    assert "v4" not in {row["tag"] for row in preview}  # --keep 1: the latest matching tag stays
    with httpx.Client(base_url=host.url, timeout=30) as http:
        assert http.get("/v2/purge/app/tags/list").json()["tags"] == sorted(["v1", "v2", "v3", "v4", "keep-me"])

    done = _acr(
        host,
        token,
        tmp_path,
        "purge",
        "-n",
        name,
        "--filter",
        "purge/.*:v.*",
        "--ago",
        "0",
        "--keep",
        "1",
        "--untagged",
    )
    assert isinstance(done, list)
    results = {(row["tag"] or row["digest"]): row["result"] for row in done}
    assert results["v2"] == results["v3"] == "deleted"
    assert results["v1"].startswith("skipped")  # locked: never unlocked, never deleted
    assert results[untagged] == "deleted"
    assert results[digests["v2"]] == results[digests["v3"]] == "deleted"  # left untagged by the purge
    with httpx.Client(base_url=host.url, timeout=30) as http:
        assert http.get("/v2/purge/app/tags/list").json()["tags"] == ["keep-me", "v1", "v4"]
        assert http.head(f"/v2/purge/app/manifests/{untagged}").status_code == 404
        assert http.head(f"/v2/other/app/manifests/{other}").status_code == 200
    # a bad filter or duration is bad input (exit 2), not a traceback
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "ACR_CONFIG": str(tmp_path / "c.json"),
        "ACR_ENDPOINT": host.url,
        "PYTHONPATH": host.env.get("PYTHONPATH", ""),
    }
    bad = subprocess.run(
        [str(ACR), "purge", "-n", name, "--filter", "[:x", "--ago", "1d"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert bad.returncode == 2 and "--filter" in bad.stderr
    # RE2: a backreference is refused before anything is deleted, saying why
    backreference = subprocess.run(
        [str(ACR), "purge", "-n", name, "--filter", r"purge/(app)\1:.*", "--ago", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert backreference.returncode == 2, backreference.stderr
    assert "not RE2 syntax (invalid escape sequence: \\1)" in backreference.stderr
    assert "no backreferences or lookarounds" in backreference.stderr

    # (a+)+$ against a long a...b tag: exponential for a backtracking matcher, linear for RE2; it completes
    # (subprocess timeout: a hang fails the test instead of wedging it) and deletes exactly the matching tag
    long_tag = "a" * 100 + "b"
    with httpx.Client(base_url=host.url, timeout=30) as http:
        _push_small(http, "patho/app", long_tag)
        matching = _push_small(http, "patho/app", "aaaa")
    # --untagged: the manifest the tag leaves untagged goes too (the retention tests below share this registry)
    pathological = _acr(
        host, token, tmp_path, "purge", "-n", name, "--filter", "patho/app:(a+)+$", "--ago", "0", "--untagged"
    )
    assert isinstance(pathological, list)
    assert [(row["tag"], row["digest"], row["result"]) for row in pathological] == [
        ("aaaa", matching, "deleted"),
        (None, matching, "deleted"),
    ]
    with httpx.Client(base_url=host.url, timeout=30) as http:
        assert http.get("/v2/patho/app/tags/list").json()["tags"] == [long_tag]


# --- retention, upload expiry and soft delete with real clients ------------------------------------------
async def _set_policies(env: dict[str, str], name: str, sku: str, policies: dict[str, Any]) -> RegistryDoc:
    """The registry's tier and policies (the lifecycle devhost reads its document afresh on every request);
    the storage quota out of the way of these tests."""
    cosmos = Cosmos(settings_from_env(env))
    await cosmos.open()
    try:
        await update_registry(cosmos, name, storage_quota=STORAGE_OUT_OF_THE_WAY)
        registries = RegistryStore(cosmos)
        doc = await registries.get_registry(name)
        assert doc is not None
        doc.sku, doc.policies = sku, policies
        return await registries.put_registry(doc)
    finally:
        await cosmos.close()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def _retention(env: dict[str, str], doc: RegistryDoc, now: datetime) -> list[str]:
    cosmos = Cosmos(settings_from_env(env))
    await cosmos.open()
    try:
        return (await apply_retention(ArtifactStore(cosmos), doc, now)).deleted
    finally:
        await cosmos.close()


async def _expire_and_look(env: dict[str, str], name: str, session: str) -> tuple[int, bool]:
    """Expire idle uploads (idle for more than a second) and say whether the session's blob is still in
    Azurite."""
    settings = settings_from_env(env)
    cosmos, blobs = Cosmos(settings), BlobStore(settings)
    await cosmos.open()
    await blobs.open()
    try:
        expired = await expire_uploads(ArtifactStore(cosmos), blobs, idle_seconds=1.0)
    finally:
        await cosmos.close()
        await blobs.close()
    async with BlobServiceClient.from_connection_string(settings.blob_connection_string) as service:
        blob = service.get_container_client(container_name(name)).get_blob_client(f"uploads/{session}")
        try:
            await blob.get_block_list("all")
        except ResourceNotFoundError:
            return expired, False
    return expired, True


def test_retention_deletes_what_skopeo_left_untagged_after_the_policy_days(
    lifecycle_host: tuple[Devhost, str, str], skopeo: Skopeo, tmp_path: Path
) -> None:
    host, name, _ = lifecycle_host
    doc = asyncio.run(_set_policies(host.env, name, "Premium", {"retentionPolicy": {"status": "enabled", "days": 1}}))
    try:
        first, _ = build_single_platform_image(tmp_path / "first", [2_000], tag="v1")
        skopeo.copy(first.reference("v1"), f"docker://{host.host}/kept/app:v1")
        old = _digest(skopeo.inspect_raw(f"docker://{host.host}/kept/app:v1"))  # as pushed (skopeo compresses)
        second, _ = build_single_platform_image(tmp_path / "second", [2_000], tag="v1")
        skopeo.copy(second.reference("v1"), f"docker://{host.host}/kept/app:v1")  # the first is untagged now
        new = _digest(skopeo.inspect_raw(f"docker://{host.host}/kept/app:v1"))
        assert skopeo.inspect(f"docker://{host.host}/kept/app@{old}")["Digest"] == old  # still there
        now = datetime.now(UTC)
        assert asyncio.run(_retention(host.env, doc, now)) == []  # the clock starts
        assert asyncio.run(_retention(host.env, doc, now + timedelta(hours=23))) == []
        assert asyncio.run(_retention(host.env, doc, now + timedelta(days=1, minutes=1))) == [f"kept/app@{old}"]
        with pytest.raises(CommandError) as gone:
            skopeo.inspect(f"docker://{host.host}/kept/app@{old}")
        assert "manifest unknown" in gone.value.stderr.lower()
        assert skopeo.inspect(f"docker://{host.host}/kept/app:v1")["Digest"] == new
    finally:
        asyncio.run(_set_policies(host.env, name, "Standard", {}))


def test_an_abandoned_chunked_upload_expires_with_its_staged_blocks(
    lifecycle_host: tuple[Devhost, str, str], tmp_path: Path
) -> None:
    host, name, _ = lifecycle_host
    chunk = tmp_path / "chunk"
    chunk.write_bytes(os.urandom(50_000))
    started = subprocess.run(
        ["curl", "-sS", "-D", "-", "-o", "/dev/null", "-X", "POST", f"{host.url}/v2/abandoned/blobs/uploads/"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    headers = httpx.Headers([tuple(line.split(": ", 1)) for line in started.stdout.splitlines() if ": " in line])
    location, session = headers["location"].strip(), headers["docker-upload-uuid"].strip()
    url = location if location.startswith("http") else host.url + location
    patched = subprocess.run(
        [*CURL_PATCH, f"@{chunk}", "-H", "Content-Type: application/octet-stream", "-H", "Content-Range: 0-49999", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert patched.stdout == "202"  # then the client goes away
    time.sleep(2.1)  # Cosmos's `_ts` has whole seconds: idle for more than a second now
    expired, staged = asyncio.run(_expire_and_look(host.env, name, session))
    assert expired >= 1 and not staged  # the session's staged blocks are gone from Azurite
    with httpx.Client(timeout=30) as http:
        gone = http.get(url)
    assert gone.status_code == 404 and gone.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"


def test_skopeo_delete_is_soft_and_acr_manifest_restore_brings_the_image_back(
    lifecycle_host: tuple[Devhost, str, str], skopeo: Skopeo, tmp_path: Path
) -> None:
    host, name, token = lifecycle_host
    asyncio.run(_set_policies(host.env, name, "Standard", {}))
    try:
        updated = _acr(host, token, tmp_path, "update", "-n", name, "--soft-delete-enabled", "true")
        assert isinstance(updated, dict)
        assert updated["properties"]["policies"]["softDeletePolicy"] == {"status": "enabled", "retentionDays": 7}
        layout, _ = build_single_platform_image(tmp_path / "image", [3_000, 1_500], tag="v1")
        skopeo.copy(layout.reference("v1"), f"docker://{host.host}/soft/app:v1")
        pushed = skopeo.inspect_raw(f"docker://{host.host}/soft/app:v1")
        digest = _digest(pushed)
        skopeo.delete(f"docker://{host.host}/soft/app:v1")
        with pytest.raises(CommandError):
            skopeo.inspect_raw(f"docker://{host.host}/soft/app@{digest}")

        listed = _acr(host, token, tmp_path, "manifest", "list-deleted", "-r", name, "-n", "soft/app")
        assert isinstance(listed, list) and [(m["digest"], m["tags"]) for m in listed] == [(digest, ["v1"])]
        tags = _acr(host, token, tmp_path, "manifest", "list-deleted-tags", "-r", name, "-n", "soft/app:v1")
        assert isinstance(tags, list) and [(t["tag"], t["digest"]) for t in tags] == [("v1", digest)]
        restored = _acr(host, token, tmp_path, "manifest", "restore", "-r", name, "-n", "soft/app:v1", "--yes")
        assert restored == {"digest": digest, "tags": ["v1"]}

        assert skopeo.inspect_raw(f"docker://{host.host}/soft/app:v1") == pushed
        skopeo.copy(f"docker://{host.host}/soft/app:v1", f"oci:{tmp_path / 'pulled'}:v1")
        manifest = json.loads(pushed)
        for descriptor in (manifest["config"], *manifest["layers"]):
            algorithm, hexdigest = descriptor["digest"].split(":")
            data = (tmp_path / "pulled" / "blobs" / algorithm / hexdigest).read_bytes()
            assert _digest(data) == descriptor["digest"] and len(data) == descriptor["size"]
        assert _acr(host, token, tmp_path, "manifest", "list-deleted", "-r", name, "-n", "soft/app") == []
    finally:
        asyncio.run(_set_policies(host.env, name, "Standard", {}))
