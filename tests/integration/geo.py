"""What the geo-replication tests share: a devhost serving three regions of one Azurite (a bus topic of its
own, so its worker consumes only their events), Premium registries replicated to every region, pushes of
multi-platform images over /v2/, and waiting for an image to reach every region."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from dataclasses import dataclass
from typing import Any

import httpx

from services.devhost.stack import LocalStack, free_port
from services.management.access import update_registry
from services.management.registries import RegistryChanges, create_registry
from services.management.store import RegistryStore
from services.platform.settings import Settings
from services.registry.store import repo_key
from services.replication.regions import RegionalStorage
from services.replication.resources import ReplicationChanges, put_replication
from services.replication.store import ImageReplicationDoc, ImageStatusStore
from tests.conftest import GEO_REGIONS, Devhost
from tests.entra_issuer import TestIssuer
from tests.integration.conftest import Stores, unique_registry_name

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
# Manifests bigger than this are kept in Blob Storage (and replicated); smaller ones inline in Cosmos DB.
GEO_ENV = {"INLINE_MANIFEST_BYTES": "600", "OUTBOX_RELAY_AFTER_SECONDS": "1", "BUS_MAX_DELIVERIES": "3"}


def geo_devhost_env(local_stack: LocalStack, entra_issuer: TestIssuer) -> dict[str, str]:
    """A devhost of three regions (this instance in the first) with a bus topic of its own."""
    env = local_stack.env() | local_stack.region_env() | GEO_ENV | {"BUS_TOPIC": "geo" + str(free_port())}
    return env | {"ENTRA_ISSUERS": entra_issuer.setting()}


def regional_client(devhost: Devhost, registry: str, region: str | None) -> httpx.Client:
    """A client of the registry's regional endpoint `<registry>.<region>.geo.<domain>` (None: the global one)."""
    port = int(devhost.host.rsplit(":", 1)[1])
    label = f"{registry}.{region}.geo" if region else registry
    return httpx.Client(
        base_url=devhost.url, headers={"Host": f"{label}.azurecr.localhost:{port}"}, follow_redirects=False, timeout=60
    )


async def geo_registry(stores: Stores, regions: tuple[str, ...] = GEO_REGIONS) -> str:
    """A Premium registry at home in the first region and replicated to the others (no credentials)."""
    name = unique_registry_name()
    changes = RegistryChanges(location=regions[0])
    await create_registry(stores.metadata, stores.blobs, stores.settings, name, "Premium", changes=changes)
    await update_registry(stores.metadata, name, auth_disabled=True)
    doc = await RegistryStore(stores.metadata).get_registry(name)
    assert doc is not None
    for region in regions[1:]:
        await put_replication(stores.metadata, doc, region, ReplicationChanges(location=region))
    return name


@dataclass(frozen=True)
class Pushed:
    index: str
    manifests: list[str]
    blobs: dict[str, bytes]  # every blob the image needs in Storage, by digest


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _upload(http: httpx.Client, repo: str, data: bytes) -> dict[str, Any]:
    digest = _digest(data)
    reply = http.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)
    assert reply.status_code == 201, reply.text
    return {"digest": digest, "size": len(data)}


def push_multi_platform(http: httpx.Client, repo: str, tag: str, layer_bytes: int = 256 * 1024) -> Pushed:
    """An OCI index of two platforms, each a config and a random layer; manifests padded past the inline
    size (GEO_ENV), so they live in Blob Storage too."""
    blobs: dict[str, bytes] = {}
    children: list[dict[str, Any]] = []
    for arch in ("amd64", "arm64"):
        config = json.dumps({"architecture": arch, "os": "linux", "rootfs": {"type": "layers"}}).encode()
        layer = os.urandom(layer_bytes)
        config_ref, layer_ref = _upload(http, repo, config), _upload(http, repo, layer)
        blobs[config_ref["digest"]], blobs[layer_ref["digest"]] = config, layer
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_ref},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", **layer_ref}],
                "annotations": {"pad": "x" * 700},
            }
        ).encode()
        digest = _digest(manifest)
        reply = http.put(f"/v2/{repo}/manifests/{digest}", content=manifest, headers={"Content-Type": OCI_MANIFEST})
        assert reply.status_code == 201, reply.text
        blobs[digest] = manifest
        children.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": len(manifest),
                "platform": {"architecture": arch, "os": "linux"},
            }
        )
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children, "annotations": {"pad": "y" * 700}}
    ).encode()
    reply = http.put(f"/v2/{repo}/manifests/{tag}", content=index, headers={"Content-Type": OCI_INDEX})
    assert reply.status_code == 201, reply.text
    blobs[_digest(index)] = index
    return Pushed(_digest(index), [c["digest"] for c in children], blobs)


async def wait_replicated(
    stores: Stores,
    registry: str,
    repository: str,
    digest: str,
    regions: tuple[str, ...] = GEO_REGIONS,
    seconds: float = 60,
) -> ImageReplicationDoc:
    """The image's status once every region says `copied`."""
    store = ImageStatusStore(stores.metadata)
    status = None
    for _ in range(int(seconds / 0.1)):
        status = await store.get(repo_key(registry, repository), digest)
        if status is not None and all(
            status.regions.get(r) is not None and status.regions[r].state == "copied" for r in regions
        ):
            return status
        await asyncio.sleep(0.1)
    raise AssertionError(f"{repository}@{digest} never reached every region: {status}")


async def regional_blobs(settings: Settings, registry: str, digests: list[str]) -> dict[str, dict[str, bytes | None]]:
    """What each region's account holds of `digests` (None: not there)."""
    from services.platform.blobs import BlobStore

    local = BlobStore(settings)
    await local.open()
    regions = RegionalStorage(settings, local)
    found: dict[str, dict[str, bytes | None]] = {}
    try:
        for region in regions.regions:
            store = await regions.store(region)
            found[region] = {}
            for digest in digests:
                found[region][digest] = (
                    await store.read_all(registry, digest) if await store.size(registry, digest) is not None else None
                )
    finally:
        await regions.close()
        await local.close()
    return found
