"""Geo-replication end to end (issue 12): three local regions (one Azurite account each); skopeo pushes a
multi-platform image to the home region; the replication worker copies it; podman pulls it through each
regional endpoint (`<registry>.<region>.geo.azurecr.localhost`), whose blob redirects point at that region's
account; a pull through a region that has not caught up yet still succeeds, served by one that has it.

`*.localhost` names do not resolve everywhere: the clients reach the devhost as their HTTP proxy (it serves
absolute-form requests by their Host), and the Storage redirects (127.0.0.1) go direct.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.devhost.stack import LocalStack
from services.replication.regions import RegionalStorage
from tests.conftest import GEO_REGIONS, Devhost, running_devhost
from tests.e2e.clients import Podman, Skopeo, build_multi_platform_index, reachable_blobs
from tests.entra_issuer import TestIssuer
from tests.integration.conftest import Stores, settings_from_env
from tests.integration.conftest import stores as stores  # the fixture (Cosmos and Storage clients)
from tests.integration.geo import geo_devhost_env, geo_registry, regional_client, wait_replicated

ACCOUNTS = {"westeurope": "devstoreaccount1", "eastus": "acreastus", "japaneast": "acrjapaneast"}


@pytest.fixture(scope="module")
def geo_devhost(
    local_stack: LocalStack, entra_issuer: TestIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Devhost]:
    with running_devhost(geo_devhost_env(local_stack, entra_issuer), tmp_path_factory.mktemp("geo-e2e")) as host:
        yield host


async def test_push_once_pull_through_every_region(
    geo_devhost: Devhost,
    stores: Stores,
    skopeo: Skopeo,
    fresh_podman: Podman,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = await geo_registry(stores)
    port = geo_devhost.host.rsplit(":", 1)[1]
    monkeypatch.setenv("HTTP_PROXY", geo_devhost.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    layout, built = build_multi_platform_index(tmp_path / "source", tag="v1")
    home = f"{registry}.azurecr.localhost:{port}"
    skopeo.copy(layout.reference("v1"), f"docker://{home}/team/app:v1", all_images=True, preserve_digests=True)
    index = built.index.digest
    status = await wait_replicated(stores, registry, "team/app", index)
    for image in built.images:
        await wait_replicated(stores, registry, "team/app", image.manifest.digest)
    assert set(status.regions) == set(GEO_REGIONS)

    amd64 = next(i for i in built.images if json.loads(layout.read_blob(i.config.digest))["architecture"] == "amd64")
    blobs = sorted(reachable_blobs(layout, amd64.manifest.digest) - {amd64.manifest.digest})
    for region in GEO_REGIONS:  # every blob redirect of a regional endpoint points at its region's account
        with regional_client(geo_devhost, registry, region) as http:
            for blob in blobs:
                reply = http.get(f"/v2/team/app/blobs/{blob}")
                assert reply.status_code == 307 and reply.headers["X-Registry-Region"] == region
                assert f"/{ACCOUNTS[region]}/" in reply.headers["Location"], (region, reply.headers["Location"])
        fresh_podman.pull(f"{registry}.{region}.geo.azurecr.localhost:{port}/team/app:v1")
        inspected = fresh_podman.image_inspect(f"{registry}.{region}.geo.azurecr.localhost:{port}/team/app:v1")
        assert inspected["Digest"] == index
        fresh_podman.run("rmi", "--all", "--force")

    # japaneast has not caught up yet (its copies of the amd64 layers are not there): the pull still works
    regions = RegionalStorage(settings_from_env(geo_devhost.env), stores.blobs)
    try:
        japan = await regions.store("japaneast")
        for layer in amd64.layers:
            await japan.delete(registry, layer.descriptor.digest)
    finally:
        await regions.close()
    with regional_client(geo_devhost, registry, "japaneast") as http:
        reply = http.get(f"/v2/team/app/blobs/{amd64.layers[0].descriptor.digest}")
        assert reply.headers["X-Registry-Region"] == "westeurope" and "/devstoreaccount1/" in reply.headers["Location"]
        assert _fetch(reply.headers["Location"]) == layout.read_blob(amd64.layers[0].descriptor.digest)
    fresh_podman.pull(f"{registry}.japaneast.geo.azurecr.localhost:{port}/team/app:v1")
    assert (
        fresh_podman.image_inspect(f"{registry}.japaneast.geo.azurecr.localhost:{port}/team/app:v1")["Digest"] == index
    )


def _fetch(url: str) -> bytes:
    with httpx.Client(trust_env=False, timeout=60) as http:
        return http.get(url).content
