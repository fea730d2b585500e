"""The retention policy for untagged manifests (services/registry/retention.py) against the emulators: what
is deleted after the policy's days, what is kept (tagged again, locked, children of a tagged index,
referrers of a manifest that is there), the `delete` events, and the blobs released to the collector."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.management.store import RegistryStore
from services.registry.collector import GarbageCollector
from services.registry.retention import apply_retention
from services.registry.store import ArtifactStore, repo_key
from tests.integration.conftest import RegistryClient, Stores

pytestmark = pytest.mark.integration

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_image(http: httpx.Client, repo: str, reference: str, media_type: str = OCI_MANIFEST, **extra: Any) -> str:
    layer, config = os.urandom(700), os.urandom(100)
    for data in (layer, config):
        assert (
            http.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest_of(data)}, content=data).status_code == 201
        )
    config_type = (
        "application/vnd.docker.container.image.v1+json"
        if media_type == DOCKER_MANIFEST
        else "application/vnd.oci.image.config.v1+json"
    )
    body = {
        "schemaVersion": 2,
        "mediaType": media_type,
        "config": {"mediaType": config_type, "digest": digest_of(config), "size": len(config)},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest_of(layer), "size": len(layer)}
        ],
    } | extra
    data = json.dumps(body).encode()
    reply = http.put(f"/v2/{repo}/manifests/{reference}", content=data, headers={"Content-Type": media_type})
    assert reply.status_code == 201, reply.text
    return digest_of(data)


async def test_untagged_manifests_go_after_the_policy_days_and_the_rest_stays(
    registry: RegistryClient, stores: Stores
) -> None:
    http, name = registry.http, registry.name
    registries = RegistryStore(stores.metadata)
    doc = await registries.get_registry(name)
    assert doc is not None
    doc.sku, doc.policies = "Premium", {"retentionPolicy": {"days": 2, "status": "enabled"}}
    doc = await registries.put_registry(doc)

    old = push_image(http, "app", "v1")
    push_image(http, "app", "v1")  # the tag moves on: `old` is untagged now
    docker = push_image(http, "app", "d1", DOCKER_MANIFEST)
    assert http.delete("/v2/app/manifests/d1").status_code == 202  # untag: the Docker manifest stays, untagged
    locked = push_image(http, "app", "locked")
    assert http.patch(f"/acr/v1/app/_manifests/{locked}", json={"deleteEnabled": False}).status_code == 200
    assert http.delete("/v2/app/manifests/locked").status_code == 202
    retagged = push_image(http, "app", "again")
    assert http.delete("/v2/app/manifests/again").status_code == 202
    child = push_image(http, "app", "child")
    assert http.delete("/v2/app/manifests/child").status_code == 202
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": child, "size": 1}],
        }
    ).encode()
    child_size = len(http.get(f"/v2/app/manifests/{child}", headers={"Accept": OCI_MANIFEST}).content)
    index = index.replace(b'"size": 1', f'"size": {child_size}'.encode())
    assert http.put("/v2/app/manifests/multi", content=index, headers={"Content-Type": OCI_INDEX}).status_code == 201
    subject = {
        "mediaType": OCI_MANIFEST,
        "digest": retagged,
        "size": len(http.get(f"/v2/app/manifests/{retagged}", headers={"Accept": OCI_MANIFEST}).content),
    }
    signature = push_image(http, "app", "sig", subject=subject, artifactType="application/vnd.example.signature")
    assert http.delete("/v2/app/manifests/sig").status_code == 202

    artifacts = ArtifactStore(stores.metadata)
    now = datetime.now(UTC)
    first = await apply_retention(artifacts, doc, now)
    assert first.deleted == [] and first.scheduled == 3 and first.kept_locked == 1  # old, docker, retagged
    # tagged again before its time: no longer scheduled
    again = http.get(f"/v2/app/manifests/{retagged}", headers={"Accept": OCI_MANIFEST})
    assert (
        http.put("/v2/app/manifests/again", content=again.content, headers={"Content-Type": OCI_MANIFEST}).status_code
        == 201
    )

    later = await apply_retention(artifacts, doc, now + timedelta(days=2, minutes=1))
    assert sorted(later.deleted) == sorted([f"app@{old}", f"app@{docker}"])
    for digest in (old, docker):
        assert http.get(f"/v2/app/manifests/{digest}").status_code == 404
    for digest in (locked, retagged, child, signature):  # locked, tagged again, a tagged index's child, a referrer
        assert http.head(f"/v2/app/manifests/{digest}").status_code == 200
    # each deletion raised ACR's `delete` event through the outbox
    repo = repo_key(name, "app")
    events = [
        event
        async for item in stores.metadata.query(
            "artifacts", "SELECT * FROM c WHERE c.repo = @p AND c.type = 'outbox'", {"@p": repo}, repo
        )
        for event in item["events"]
    ]
    deleted = {event["target"]["digest"] for event in events if event["action"] == "delete"}
    assert {old, docker} <= deleted
    # their blobs were released: the collector (no grace) takes them
    report = await GarbageCollector(
        stores.settings.model_copy(update={"gc_grace_seconds": 0.0}), stores.metadata, stores.blobs
    ).run(name)
    assert report.deleted >= 4  # two layers and two configs


async def test_the_policy_does_nothing_unless_enabled_on_premium(registry: RegistryClient, stores: Stores) -> None:
    http, name = registry.http, registry.name
    registries = RegistryStore(stores.metadata)
    doc = await registries.get_registry(name)
    assert doc is not None
    doc.policies = {"retentionPolicy": {"days": 0, "status": "enabled"}}  # on a Standard registry: not applied
    untagged = push_image(http, "app", "x")
    assert http.delete("/v2/app/manifests/x").status_code == 202
    artifacts = ArtifactStore(stores.metadata)
    assert (await apply_retention(artifacts, doc)).deleted == []
    doc.sku = "Premium"
    assert (await apply_retention(artifacts, doc)).deleted == [f"app@{untagged}"]  # 0 days: at once
