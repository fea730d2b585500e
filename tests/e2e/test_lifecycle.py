"""Lifecycle with real clients: skopeo refused past a storage quota with a clear message, and `acr gc run`
(preview, then the collection) and `acr gc recount` on what a skopeo push and a delete left.

A devhost of its own serves a fresh registry as its default (so skopeo reaches it by address), reads the
registry document afresh on every request (the quota applies at once) and has no grace period."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.management.access import assign_role, update_registry
from services.management.registries import create_registry
from services.management.store import LOCAL_RESOURCE_GROUP, LOCAL_SUBSCRIPTION
from services.platform.blobs import BlobStore
from services.platform.cosmos import Cosmos
from services.registry.ledger import BlobLedger
from tests.conftest import Devhost, running_devhost
from tests.e2e.clients import CommandError, Skopeo, build_single_platform_image
from tests.entra_issuer import TestIssuer
from tests.integration.conftest import settings_from_env

ACR = Path(sys.executable).parent / "acr"


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
    assert recount == {"registry": name, "blobs": 0, "storageBytes": 0, "previous": 0}

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
