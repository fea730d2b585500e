"""Soft delete (services/registry/softdelete.py) against the real emulators: deletes kept as records and
invisible to `/v2/`, the `/acr/v1/_deleted/` lists, restore (by tag, every tag, conflicts and force), the
purge after the policy's days (an explicit clock) releasing the blobs to the collector, the collector racing
a soft delete, a soft-deleted repository, hostile input, and the policy combinations ACR refuses (ARM)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.management.store import RegistryDoc, RegistryStore
from services.registry.collector import GarbageCollector
from services.registry.ledger import BlobLedger
from services.registry.softdelete import purge_expired
from services.registry.store import repo_key
from tests.integration.conftest import RegistryClient, Stores, unique_registry_name
from tests.integration.test_arm_registries import Arm, _create_body, arm  # noqa: F401  (the `arm` fixture)

pytestmark = pytest.mark.integration

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def push_image(
    http: httpx.Client, repo: str, *tags: str, layer: bytes | None = None, **extra: Any
) -> tuple[str, bytes, list[str]]:
    """(digest, manifest bytes, [layer, config] digests) of a new image pushed with `tags` (by digest when
    none)."""
    layer, config = layer or os.urandom(700), os.urandom(100)
    for data in (layer, config):
        reply = http.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest_of(data)}, content=data)
        assert reply.status_code == 201, reply.text
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(config), "size": 100},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest_of(layer), "size": len(layer)}
        ],
    } | extra
    data = json.dumps(body).encode()
    digest = digest_of(data)
    for reference in tags or (digest,):
        reply = http.put(f"/v2/{repo}/manifests/{reference}", content=data, headers={"Content-Type": OCI_MANIFEST})
        assert reply.status_code == 201, reply.text
    return digest, data, [digest_of(layer), digest_of(config)]


async def enable(stores: Stores, name: str, days: int = 7) -> RegistryDoc:
    """Soft delete on, before the registry's first request (the data plane caches registry documents)."""
    registries = RegistryStore(stores.metadata)
    doc = await registries.get_registry(name)
    assert doc is not None
    doc.policies = {"softDeletePolicy": {"status": "enabled", "retentionDays": days}}
    return await registries.put_registry(doc)


def error_code(reply: httpx.Response) -> str:
    return str(reply.json()["errors"][0]["code"])


async def events_of(stores: Stores, registry: str, repository: str) -> list[dict[str, Any]]:
    repo = repo_key(registry, repository)
    sql = "SELECT * FROM c WHERE c.repo = @p AND c.type = 'outbox'"
    return [
        event async for item in stores.metadata.query("artifacts", sql, {"@p": repo}, repo) for event in item["events"]
    ]


async def test_deleted_manifests_and_tags_are_hidden_listed_and_restored(
    registry: RegistryClient, stores: Stores
) -> None:
    await enable(stores, registry.name)
    http = registry.http
    digest, data, _ = push_image(http, "app", "v1", "latest")
    kept, _, _ = push_image(http, "app", "stay")
    assert http.delete(f"/v2/app/manifests/{digest}").status_code == 202
    # invisible to /v2/ and the live lists
    assert error_code(http.get(f"/v2/app/manifests/{digest}")) == "MANIFEST_UNKNOWN"
    assert error_code(http.get("/v2/app/manifests/v1")) == "MANIFEST_UNKNOWN"
    assert http.get("/v2/app/tags/list").json()["tags"] == ["stay"]
    assert [m["digest"] for m in http.get("/acr/v1/app/_manifests").json()["manifests"]] == [kept]
    # listed as deleted
    manifests = http.get("/acr/v1/_deleted/app/_manifests").json()
    assert manifests["imageName"] == "app"
    [item] = manifests["manifests"]
    assert item["digest"] == digest and item["tags"] == ["latest", "v1"] and item["deletedAt"]
    tags = http.get("/acr/v1/_deleted/app/_tags").json()["tags"]
    assert [(t["tag"], t["digest"]) for t in tags] == [("latest", digest), ("v1", digest)]
    catalog = http.get("/acr/v1/_deleted/_catalog")
    assert catalog.json().get("repositories") == [], catalog.text  # the repository is still there
    # restore with one tag: the manifest and that tag come back, raising push; the other tag stays deleted
    restored = http.post(f"/acr/v1/_deleted/app/_manifests/{digest}", json={"tag": "v1"})
    assert restored.status_code == 200, restored.text
    assert restored.json() == {"digest": digest, "tags": ["v1"]}
    assert http.get("/v2/app/manifests/v1", headers={"Accept": OCI_MANIFEST}).content == data
    assert http.get("/acr/v1/_deleted/app/_manifests").json()["manifests"] == []
    assert [t["tag"] for t in http.get("/acr/v1/_deleted/app/_tags").json()["tags"]] == ["latest"]
    pushed = [e for e in await events_of(stores, registry.name, "app") if e["action"] == "push"]
    # the push of v1, then the restore's (the outbox query has no order: count them)
    assert sum(1 for e in pushed if e["target"]["digest"] == digest and e["target"].get("tag") == "v1") == 2
    # the remaining tag, then an untag (the manifest stays live; the tag is kept and restorable)
    assert http.post(f"/acr/v1/_deleted/app/_manifests/{digest}", json={"tag": "latest"}).status_code == 200
    assert http.head("/v2/app/manifests/latest").status_code == 200
    assert http.delete("/v2/app/manifests/latest").status_code == 202
    assert http.head(f"/v2/app/manifests/{digest}").status_code == 200
    assert [t["tag"] for t in http.get("/acr/v1/_deleted/app/_tags").json()["tags"]] == ["latest"]
    assert http.post(f"/acr/v1/_deleted/app/_manifests/{digest}", json={}).json()["tags"] == ["latest"]
    assert http.head("/v2/app/manifests/latest").status_code == 200
    # nothing deleted any more: restoring again finds nothing of that tag
    again = http.post(f"/acr/v1/_deleted/app/_manifests/{digest}", json={"tag": "v1"})
    assert again.status_code == 404 and error_code(again) == "TAG_UNKNOWN"


async def test_a_restore_onto_a_moved_tag_is_a_conflict_unless_forced(registry: RegistryClient, stores: Stores) -> None:
    await enable(stores, registry.name)
    http = registry.http
    old, old_data, _ = push_image(http, "app", "prod")
    assert http.delete(f"/v2/app/manifests/{old}").status_code == 202
    new, _, _ = push_image(http, "app", "prod")
    conflict = http.post(f"/acr/v1/_deleted/app/_manifests/{old}", json={"tag": "prod"})
    assert conflict.status_code == 409 and "force" in conflict.text
    assert http.head("/v2/app/manifests/prod").headers["Docker-Content-Digest"] == new  # unchanged
    assert http.head(f"/v2/app/manifests/{old}").status_code == 404
    forced = http.post(f"/acr/v1/_deleted/app/_manifests/{old}", params={"force": "True"}, json={"tag": "prod"})
    assert forced.status_code == 200, forced.text
    assert http.get("/v2/app/manifests/prod", headers={"Accept": OCI_MANIFEST}).content == old_data
    # the tag it overwrote is soft-deleted, and can be moved back the same way
    tags = http.get("/acr/v1/_deleted/app/_tags").json()["tags"]
    assert [(t["tag"], t["digest"]) for t in tags] == [("prod", new)]
    assert http.head(f"/v2/app/manifests/{new}").status_code == 200  # its manifest stays live
    locked = http.patch("/acr/v1/app/_tags/prod", json={"writeEnabled": False})
    assert locked.status_code == 200
    refused = http.post(f"/acr/v1/_deleted/app/_manifests/{new}", params={"force": "true"}, json={"tag": "prod"})
    assert refused.status_code == 405 and "writeEnabled" in refused.text  # a locked tag is not moved
    # a locked manifest is not deleted at all, soft or not
    kept, _, _ = push_image(http, "app", "kept")
    assert http.patch(f"/acr/v1/app/_manifests/{kept}", json={"deleteEnabled": False}).status_code == 200
    assert http.delete(f"/v2/app/manifests/{kept}").status_code == 405
    assert kept not in {m["digest"] for m in http.get("/acr/v1/_deleted/app/_manifests").json()["manifests"]}
    assert http.head(f"/v2/app/manifests/{kept}").status_code == 200


async def test_the_purge_after_the_policy_days_releases_the_blobs(registry: RegistryClient, stores: Stores) -> None:
    doc = await enable(stores, registry.name, days=2)
    http = registry.http
    digest, _, blobs = push_image(http, "app", "v1")
    untagged, _, _ = push_image(http, "app", "v2")
    assert http.delete(f"/v2/app/manifests/{digest}").status_code == 202
    assert http.delete("/v2/app/manifests/v2").status_code == 202  # an untag: a deleted tag record
    now = datetime.now(UTC)
    early = await purge_expired(stores.metadata, doc, now + timedelta(days=1))
    assert early.manifests == [] and early.tags == 0
    # the collector leaves the blobs of a soft-deleted manifest alone, whatever its grace
    settings = stores.settings.model_copy(update={"gc_grace_seconds": 0.0})
    await GarbageCollector(settings, stores.metadata, stores.blobs).run(registry.name)
    ledger = BlobLedger(stores.metadata)
    for blob in blobs:
        assert await ledger.get(registry.name, blob) is not None
    late = await purge_expired(stores.metadata, doc, now + timedelta(days=2, minutes=1))
    assert late.manifests == [f"app@{digest}"] and late.tags == 2  # v1 (with its manifest) and v2
    assert http.get("/acr/v1/_deleted/app/_manifests").json()["manifests"] == []
    assert http.get("/acr/v1/_deleted/app/_tags").json()["tags"] == []
    assert http.head(f"/v2/app/manifests/{untagged}").status_code == 200  # untagged, not deleted
    deleted = [e for e in await events_of(stores, registry.name, "app") if e["action"] == "delete"]
    assert sum(1 for e in deleted if e["target"]["digest"] == digest) == 2  # the delete, then the purge
    # released exactly as a hard delete: the collector takes the blobs now
    report = await GarbageCollector(settings, stores.metadata, stores.blobs).run(registry.name)
    assert set(blobs) <= set(report.digests), report
    restore = http.post(f"/acr/v1/_deleted/app/_manifests/{digest}", json={"tag": "v1"})
    assert restore.status_code == 404 and error_code(restore) == "MANIFEST_UNKNOWN"


async def test_garbage_collection_racing_soft_deletes_keeps_their_blobs(
    registry: RegistryClient, stores: Stores
) -> None:
    await enable(stores, registry.name)
    http = registry.http
    settings = stores.settings.model_copy(update={"gc_grace_seconds": 0.0})
    collector = GarbageCollector(settings, stores.metadata, stores.blobs)
    images = []
    for round_ in range(4):
        digest, data, blobs = push_image(http, f"race{round_}", "v1")
        deleting = asyncio.to_thread(http.delete, f"/v2/race{round_}/manifests/{digest}")
        reply, _ = await asyncio.gather(deleting, collector.run(registry.name))
        assert reply.status_code == 202
        images.append((round_, digest, data, blobs))
    await collector.run(registry.name)  # and once more after all of them
    for round_, digest, data, blobs in images:
        restored = http.post(f"/acr/v1/_deleted/race{round_}/_manifests/{digest}", json={"tag": "v1"})
        assert restored.status_code == 200, restored.text
        assert http.get(f"/v2/race{round_}/manifests/v1", headers={"Accept": OCI_MANIFEST}).content == data
        for blob in blobs:
            pulled = http.get(f"/v2/race{round_}/blobs/{blob}", follow_redirects=True)
            assert pulled.status_code == 200 and digest_of(pulled.content) == blob


async def test_a_soft_deleted_repository_is_listed_and_comes_back(registry: RegistryClient, stores: Stores) -> None:
    await enable(stores, registry.name)
    http = registry.http
    digest, data, blobs = push_image(http, "team/app", "v1")
    push_image(http, "keep", "v1")
    deleted = http.delete("/acr/v1/team/app")
    assert deleted.status_code == 202 and deleted.json()["manifestsDeleted"] == [digest]
    assert http.get("/v2/_catalog").json()["repositories"] == ["keep"]
    assert http.get("/acr/v1/_deleted/_catalog").json()["repositories"] == ["team/app"]
    assert http.post(f"/acr/v1/_deleted/team/app/_manifests/{digest}", json={}).json()["tags"] == ["v1"]
    assert http.get("/v2/_catalog").json()["repositories"] == ["keep", "team/app"]
    assert http.get("/v2/team/app/manifests/v1", headers={"Accept": OCI_MANIFEST}).content == data
    for blob in blobs:  # its blob links were kept
        assert http.head(f"/v2/team/app/blobs/{blob}").status_code == 200
    assert http.get("/acr/v1/_deleted/_catalog").json()["repositories"] == []


async def test_a_referrer_is_restored_after_its_subject(registry: RegistryClient, stores: Stores) -> None:
    await enable(stores, registry.name)
    http = registry.http
    subject, subject_data, _ = push_image(http, "app", "v1")
    descriptor = {"mediaType": OCI_MANIFEST, "digest": subject, "size": len(subject_data)}
    referrer, _, _ = push_image(http, "app", subject=descriptor, artifactType="application/vnd.example.sig")
    for digest in (referrer, subject):
        assert http.delete(f"/v2/app/manifests/{digest}").status_code == 202
    early = http.post(f"/acr/v1/_deleted/app/_manifests/{referrer}", json={})
    assert early.status_code == 409 and subject in early.text
    assert http.post(f"/acr/v1/_deleted/app/_manifests/{subject}", json={}).status_code == 200
    assert http.post(f"/acr/v1/_deleted/app/_manifests/{referrer}", json={}).status_code == 200
    assert [m["digest"] for m in http.get(f"/v2/app/referrers/{subject}").json()["manifests"]] == [referrer]


async def test_a_restore_needs_the_blobs_still_linked(registry: RegistryClient, stores: Stores) -> None:
    await enable(stores, registry.name)
    http = registry.http
    layer = os.urandom(700)
    digest, data, blobs = push_image(http, "app", "v1", layer=layer)
    assert http.delete(f"/v2/app/manifests/{digest}").status_code == 202
    assert http.delete(f"/v2/app/blobs/{blobs[0]}").status_code == 202  # its layer's link, by hand
    refused = http.post(f"/acr/v1/_deleted/app/_manifests/{digest}", json={"tag": "v1"})
    assert refused.status_code == 400 and error_code(refused) == "MANIFEST_BLOB_UNKNOWN", refused.text
    assert refused.json()["errors"][0]["detail"] == {"digests": [blobs[0]]}
    assert http.head(f"/v2/app/manifests/{digest}").status_code == 404  # nothing half-restored
    # the client uploads it again, then the restore goes through
    assert http.post("/v2/app/blobs/uploads/", params={"digest": blobs[0]}, content=layer).status_code == 201
    assert http.post(f"/acr/v1/_deleted/app/_manifests/{digest}", json={"tag": "v1"}).status_code == 200
    assert http.get("/v2/app/manifests/v1", headers={"Accept": OCI_MANIFEST}).content == data
    assert http.get(f"/v2/app/blobs/{blobs[0]}", follow_redirects=True).content == layer


async def test_hostile_input_is_a_clear_4xx(
    registry: RegistryClient, other_registry: RegistryClient, stores: Stores
) -> None:
    await enable(stores, registry.name)
    await enable(stores, other_registry.name)
    http = registry.http
    digest, _, _ = push_image(http, "app", "v1")
    assert http.delete(f"/v2/app/manifests/{digest}").status_code == 202
    path = f"/acr/v1/_deleted/app/_manifests/{digest}"
    cases: list[tuple[httpx.Response, int, str]] = [
        (http.post("/acr/v1/_deleted/app/_manifests/sha256:abc", json={}), 400, "DIGEST_INVALID"),
        (http.post("/acr/v1/_deleted/app/_manifests/latest", json={}), 400, "DIGEST_INVALID"),
        (http.post(f"/acr/v1/_deleted/App/_manifests/{digest}", json={}), 400, "NAME_INVALID"),
        (http.post(f"/acr/v1/_deleted/a..b/_manifests/{digest}", json={}), 400, "NAME_INVALID"),
        (http.get("/acr/v1/_deleted/app/_manifests", params={"n": "-1"}), 400, "PAGINATION_NUMBER_INVALID"),
        (http.post(path, json={"tag": "-bad"}), 400, "TAG_INVALID"),
        (http.post(path, json={"tag": "x" * 5000}), 400, "UNSUPPORTED"),  # over the body limit
        (http.post(path, content=b"{not json"), 400, "UNSUPPORTED"),
        (http.post(path, json={"tag": 7}), 400, "UNSUPPORTED"),
        (http.post(path, params={"force": "maybe"}, json={}), 400, "UNSUPPORTED"),
        (http.get(path), 405, "UNSUPPORTED"),
        (http.get("/acr/v1/_deleted/nothing/_tags"), 404, "NAME_UNKNOWN"),
        # another registry's soft-deleted manifest is not there for this one
        (other_registry.http.post(path, json={}), 404, "MANIFEST_UNKNOWN"),
        (other_registry.http.get("/acr/v1/_deleted/app/_manifests"), 404, "NAME_UNKNOWN"),
    ]
    for reply, status, code in cases:
        assert (reply.status_code, error_code(reply)) == (status, code), (reply.request.url, reply.text)
    assert http.get("/acr/v1/_deleted/app/_manifests").json()["manifests"][0]["digest"] == digest  # untouched
    # paging: n and the Link header
    for tag in ("a", "b", "c"):
        pushed, _, _ = push_image(http, "paged", tag)
        assert http.delete(f"/v2/paged/manifests/{pushed}").status_code == 202
    first = http.get("/acr/v1/_deleted/paged/_tags", params={"n": "2"})
    assert [t["tag"] for t in first.json()["tags"]] == ["a", "b"] and 'rel="next"' in first.headers["Link"]
    rest = http.get(first.headers["Link"].split(";")[0].strip("<>"))
    assert [t["tag"] for t in rest.json()["tags"]] == ["c"] and "Link" not in rest.headers
    digests = sorted(m["digest"] for m in http.get("/acr/v1/_deleted/paged/_manifests").json()["manifests"])
    assert len(digests) == 3
    first = http.get("/acr/v1/_deleted/paged/_manifests", params={"n": "2"})
    assert [m["digest"] for m in first.json()["manifests"]] == digests[:2]
    rest = http.get(first.headers["Link"].split(";")[0].strip("<>"))
    assert [m["digest"] for m in rest.json()["manifests"]] == digests[2:] and "Link" not in rest.headers
    assert http.get("/acr/v1/_deleted/paged/_manifests", params={"n": "0"}).json()["manifests"] == []


async def test_policy_combinations_acr_refuses_are_arm_400s(arm: Arm) -> None:  # noqa: F811
    name = unique_registry_name()
    retention = {"retentionPolicy": {"status": "enabled", "days": 30}}
    made = await arm.call("PUT", arm.path(name), body=_create_body("Premium", policies=retention))
    assert made.status_code == 201, made.text
    soft = {"softDeletePolicy": {"status": "enabled", "retentionDays": 14}}
    refused = await arm.call("PATCH", arm.path(name), body={"properties": {"policies": soft}})
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "InvalidRequest" and error["target"] == "properties.policies.softDeletePolicy"
    assert "retention" in error["message"]
    both = {"retentionPolicy": {"status": "disabled"}} | soft
    switched = await arm.call("PATCH", arm.path(name), body={"properties": {"policies": both}})
    assert switched.status_code == 200, switched.text
    policy = switched.json()["properties"]["policies"]["softDeletePolicy"]
    assert policy["status"] == "enabled" and policy["retentionDays"] == 14
    for days in (0, 91, "7"):
        bad = {"softDeletePolicy": {"status": "enabled", "retentionDays": days}}
        reply = await arm.call("PATCH", arm.path(name), body={"properties": {"policies": bad}})
        assert reply.status_code == 400 and reply.json()["error"]["target"].endswith("retentionDays")
    # geo-replication: not with soft delete on, and soft delete not on a geo-replicated registry
    replica = await arm.call("PUT", arm.path(name) + "/replications/eastus", body={"location": "eastus"})
    assert replica.status_code == 400, replica.text
    assert "soft delete" in replica.json()["error"]["message"]
    other = unique_registry_name()
    assert (await arm.call("PUT", arm.path(other), body=_create_body("Premium"))).status_code == 201
    replicated = await arm.call("PUT", arm.path(other) + "/replications/eastus", body={"location": "eastus"})
    assert replicated.status_code in (200, 201), replicated.text
    geo = await arm.call("PATCH", arm.path(other), body={"properties": {"policies": soft}})
    assert geo.status_code == 400 and "geo-replicated" in geo.json()["error"]["message"]
