"""The official data-plane SDK (`azure-containerregistry` 1.2.0), sync and aio, against `/acr/v1/` and `/v2/`
with authentication on: every operation of `ContainerRegistryClient` (list, read, lock, untag, delete),
paging (`results_per_page`, `by_page()`, Link headers) and `order_by`, and the locks refusing what they lock.

The registry is the default registry of a devhost of this module's own, with the test Entra issuer trusted:
the SDK signs in as ACR's clients do (Entra token -> /oauth2/exchange -> refresh token -> /oauth2/token for
the scope each challenge names: `registry:catalog:*`, `repository:<name>:metadata_read`, `metadata_write`,
`delete`, `pull`, `push`). WRITER holds AcrPush + AcrDelete, READER AcrPull.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from azure.containerregistry import (
    ArtifactManifestOrder,
    ArtifactTagOrder,
    ContainerRegistryClient,
)
from azure.containerregistry.aio import ContainerRegistryClient as AsyncContainerRegistryClient
from azure.core.credentials import AccessToken
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ResponseNotReadError,
)

from services.devhost.stack import free_port
from services.management.access import assign_role
from services.management.registries import create_registry
from services.platform.blobs import BlobStore
from services.platform.cosmos import Cosmos
from tests.conftest import Devhost, running_devhost
from tests.e2e.clients import OCI_CONFIG, OCI_INDEX, OCI_LAYER_TAR, OCI_MANIFEST, sha256_digest
from tests.e2e.test_azure_sdk import AllowPlainHttpPolicy
from tests.entra_issuer import IssuerCredential, TestIssuer
from tests.integration.conftest import settings_from_env

WRITER_OID, READER_OID = str(uuid.uuid4()), str(uuid.uuid4())
AUDIENCE = "https://management.azure.com"


@dataclass(frozen=True)
class SdkRegistry:
    devhost: Devhost
    name: str
    issuer: TestIssuer

    @property
    def endpoint(self) -> str:
        return f"http://{self.devhost.host}"


async def _prepare(env: dict[str, str], name: str, issuer: TestIssuer) -> None:
    settings = settings_from_env(env)
    metadata, blobs = Cosmos(settings), BlobStore(settings)
    await metadata.open()
    await blobs.open()
    try:
        await create_registry(metadata, blobs, settings, name, "Premium")
        for role in ("AcrPush", "AcrDelete"):  # assignments add up
            await assign_role(metadata, name, WRITER_OID, role, tenant=issuer.tenant)
        await assign_role(metadata, name, READER_OID, "AcrPull", tenant=issuer.tenant)
    finally:
        await metadata.close()
        await blobs.close()


@pytest.fixture(scope="module")
def sdk_registry(stack: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[SdkRegistry]:
    issuer = TestIssuer()
    name = "e2esdk" + uuid.uuid4().hex[:10]
    env = stack | {
        "API_TLS_PORT": str(free_port()),
        "STATE_DIR": str(tmp_path_factory.mktemp("e2e-sdk-state")),
        "DEFAULT_REGISTRY": name,
        "DEFAULT_REGISTRY_AUTH_DISABLED": "false",
        "ENTRA_ISSUERS": issuer.setting(),
    }
    asyncio.run(_prepare(stack, name, issuer))  # before the devhost starts: it caches registry documents
    with running_devhost(env, tmp_path_factory.mktemp("e2e-sdk")) as devhost:
        yield SdkRegistry(devhost, name, issuer)


class AsyncIssuerCredential:
    """An AsyncTokenCredential over the test issuer, for the aio client."""

    def __init__(self, issuer: TestIssuer, object_id: str) -> None:
        self._sync = IssuerCredential(issuer, object_id)

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return self._sync.get_token(*scopes, **kwargs)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> AsyncIssuerCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        pass


def _client(reg: SdkRegistry, who: str) -> ContainerRegistryClient:
    return ContainerRegistryClient(
        reg.endpoint,
        credential=IssuerCredential(reg.issuer, who),
        audience=AUDIENCE,
        per_call_policies=[AllowPlainHttpPolicy()],
    )


def _aio_client(reg: SdkRegistry, who: str) -> AsyncContainerRegistryClient:
    return AsyncContainerRegistryClient(
        reg.endpoint,
        credential=AsyncIssuerCredential(reg.issuer, who),  # type: ignore[arg-type]
        audience=AUDIENCE,
        per_call_policies=[AllowPlainHttpPolicy()],
    )


def _image(architecture: str) -> tuple[bytes, bytes, dict[str, Any]]:
    config = json.dumps({"architecture": architecture, "os": "linux", "n": uuid.uuid4().hex}).encode()
    layer = os.urandom(2048)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER_TAR, "digest": sha256_digest(layer), "size": len(layer)}],
    }
    return config, layer, manifest


def push(client: ContainerRegistryClient, repo: str, tag: str, architecture: str = "amd64") -> str:
    config, layer, manifest = _image(architecture)
    for blob in (config, layer):
        client.upload_blob(repo, io.BytesIO(blob))
    return client.set_manifest(repo, manifest, tag=tag)


async def aio_push(client: AsyncContainerRegistryClient, repo: str, tag: str) -> str:
    config, layer, manifest = _image("arm64")
    for blob in (config, layer):
        await client.upload_blob(repo, io.BytesIO(blob))
    return await client.set_manifest(repo, manifest, tag=tag)


def refused(error: HttpResponseError) -> None:
    """A lock's refusal as the SDK reports it: 405, ACR's message."""
    assert error.status_code == 405, error
    assert error.response is not None
    try:
        body = json.loads(error.response.text())
    except ResponseNotReadError:
        return  # the aio client streams manifest GETs and leaves an error's body unread
    assert body["errors"][0]["message"].startswith("The operation is disallowed on this registry, repository or image.")


def test_sdk_lists_reads_locks_untags_and_deletes(sdk_registry: SdkRegistry) -> None:
    repo, other = f"sdk/{uuid.uuid4().hex[:8]}/app", f"sdk/{uuid.uuid4().hex[:8]}/other"
    with _client(sdk_registry, WRITER_OID) as client:
        digests = {}
        for tag in ("t1", "t2", "t3", "t4", "t5"):
            digests[tag] = push(client, repo, tag)
            time.sleep(0.005)  # distinct lastUpdateTime
        push(client, other, "v1", "arm64")

        # Catalog, paged: every page through the Link header.
        names = list(client.list_repository_names(results_per_page=1))
        assert repo in names and other in names and names == sorted(names)
        pages = list(client.list_repository_names(results_per_page=1).by_page())
        assert len(pages) == len(names)

        props = client.get_repository_properties(repo)
        assert props.name == repo and props.manifest_count == 5 and props.tag_count == 5
        assert (props.can_delete, props.can_write, props.can_list, props.can_read) == (True, True, True, True)
        assert props.created_on <= props.last_updated_on

        # Tags, in both time orders and by name, two per page.
        newest = ["t5", "t4", "t3", "t2", "t1"]
        desc = client.list_tag_properties(
            repo, order_by=ArtifactTagOrder.LAST_UPDATED_ON_DESCENDING, results_per_page=2
        )
        assert [t.name for t in desc] == newest
        pages = list(client.list_tag_properties(repo, order_by="timeasc", results_per_page=2).by_page())
        assert [[t.name for t in page] for page in pages] == [["t1", "t2"], ["t3", "t4"], ["t5"]]
        assert [t.name for t in client.list_tag_properties(repo, results_per_page=4)] == sorted(newest)

        tag = client.get_tag_properties(repo, "t3")
        # (The SDK's get_tag_properties leaves repository_name None: it passes `repository=` where its model
        # reads `repository_name`.)
        assert tag.digest == digests["t3"] and tag.name == "t3" and tag.can_write

        # Manifests, with what the push recorded.
        manifests = list(
            client.list_manifest_properties(
                repo, order_by=ArtifactManifestOrder.LAST_UPDATED_ON_DESCENDING, results_per_page=2
            )
        )
        assert [m.digest for m in manifests] == [digests[t] for t in newest]
        assert manifests[0].tags == ["t5"]
        asc = client.list_manifest_properties(repo, order_by=ArtifactManifestOrder.LAST_UPDATED_ON_ASCENDING)
        assert [m.digest for m in asc] == [digests[t] for t in reversed(newest)]
        by_tag = client.get_manifest_properties(repo, "t1")
        by_digest = client.get_manifest_properties(repo, digests["t1"])
        assert by_tag.digest == by_digest.digest == digests["t1"]
        assert by_digest.architecture == "amd64" and by_digest.operating_system == "linux"
        assert by_digest.size_in_bytes > 2048 and by_digest.tags == ["t1"]
        # (The SDK writes the reference without the digest's algorithm.)
        assert by_digest.fully_qualified_reference.endswith(f"{repo}@{digests['t1'].split(':')[1]}")

        # Lock a tag: it survives an overwrite and a delete, by tag and by digest.
        locked = client.update_tag_properties(repo, "t1", can_write=False)
        assert locked.can_write is False and locked.can_delete is True
        config, layer, manifest = _image("amd64")
        for blob in (config, layer):
            client.upload_blob(repo, io.BytesIO(blob))
        with pytest.raises(HttpResponseError) as caught:
            client.set_manifest(repo, manifest, tag="t1")
        refused(caught.value)
        for delete in (lambda: client.delete_tag(repo, "t1"), lambda: client.delete_manifest(repo, "t1")):
            with pytest.raises(HttpResponseError) as caught:
                delete()
            refused(caught.value)
        assert client.get_manifest(repo, "t1").digest == digests["t1"]
        # Unlock with a properties object, as the SDK's samples do.
        current = client.get_tag_properties(repo, "t1")
        current.can_write = True
        assert client.update_tag_properties(repo, "t1", current).can_write is True

        # Lock a manifest against deletes.
        assert client.update_manifest_properties(repo, "t2", can_delete=False).can_delete is False
        with pytest.raises(HttpResponseError) as caught:
            client.delete_manifest(repo, digests["t2"])
        refused(caught.value)
        with pytest.raises(HttpResponseError) as caught:
            client.delete_repository(repo)
        refused(caught.value)
        client.update_manifest_properties(repo, digests["t2"], can_delete=True)

        # Hide a repository from the catalog; unhide it.
        assert client.update_repository_properties(repo, can_list=False).can_list is False
        assert repo not in list(client.list_repository_names())
        props = client.get_repository_properties(repo)
        props.can_list = True
        assert client.update_repository_properties(repo, props).can_list is True

        # Untag, delete a manifest, a blob, the repository; deletes of what is gone are not errors.
        client.delete_tag(repo, "t5")
        with pytest.raises(ResourceNotFoundError):
            client.get_tag_properties(repo, "t5")
        client.get_manifest_properties(repo, digests["t5"])  # the manifest stays
        client.delete_manifest(repo, digests["t5"])
        with pytest.raises(ResourceNotFoundError):
            client.get_manifest_properties(repo, digests["t5"])
        client.delete_tag(repo, "t5")
        digest, _ = client.upload_blob(repo, io.BytesIO(b"a loose blob"))
        client.delete_blob(repo, digest)
        client.delete_repository(repo)
        with pytest.raises(ResourceNotFoundError):
            client.get_repository_properties(repo)
        client.delete_repository(repo)
        assert repo not in list(client.list_repository_names())


def test_sdk_reads_an_index_and_its_children(sdk_registry: SdkRegistry) -> None:
    repo = f"sdk/{uuid.uuid4().hex[:8]}/multi"
    with _client(sdk_registry, WRITER_OID) as client:
        children = []
        for architecture in ("amd64", "arm64"):
            config, layer, manifest = _image(architecture)
            for blob in (config, layer):
                client.upload_blob(repo, io.BytesIO(blob))
            digest = client.set_manifest(repo, manifest, tag=architecture)
            size = len(json.dumps(manifest).encode())  # what set_manifest sent
            children.append(
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": digest,
                    "size": size,
                    "platform": {"architecture": architecture, "os": "linux"},
                }
            )
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}
        top = client.set_manifest(repo, index, tag="latest", media_type=OCI_INDEX)
        props = client.get_manifest_properties(repo, "latest")
        assert props.digest == top and props.tags == ["latest"]
        assert props.size_in_bytes == len(json.dumps(index).encode())  # an index: its own size
        assert props.architecture is None and props.operating_system is None
        # The SDK's public model drops `references` (its _from_generated does not copy related_artifacts);
        # tests/integration/test_acr_v1.py checks them on the wire. The children have their platforms:
        for child in children:
            platform = client.get_manifest_properties(repo, child["digest"])
            assert platform.architecture == child["platform"]["architecture"]


def test_sdk_reader_reads_but_cannot_lock_or_delete(sdk_registry: SdkRegistry) -> None:
    repo = f"sdk/{uuid.uuid4().hex[:8]}/ro"
    with _client(sdk_registry, WRITER_OID) as writer:
        push(writer, repo, "v1")
    with _client(sdk_registry, READER_OID) as reader:
        assert repo in list(reader.list_repository_names())
        assert [t.name for t in reader.list_tag_properties(repo)] == ["v1"]
        assert reader.get_manifest_properties(repo, "v1").tags == ["v1"]
        for attempt in (
            lambda: reader.update_tag_properties(repo, "v1", can_write=False),
            lambda: reader.update_repository_properties(repo, can_read=False),
            lambda: reader.delete_tag(repo, "v1"),
            lambda: reader.delete_repository(repo),
        ):
            with pytest.raises((ClientAuthenticationError, HttpResponseError)) as caught:
                attempt()
            assert caught.value.status_code in (401, 403)
    with _client(sdk_registry, WRITER_OID) as writer:
        assert writer.get_tag_properties(repo, "v1").can_write is True


async def test_aio_sdk_covers_every_operation(sdk_registry: SdkRegistry) -> None:
    repo = f"sdk/{uuid.uuid4().hex[:8]}/aio"
    async with _aio_client(sdk_registry, WRITER_OID) as client:
        digests = {}
        for tag in ("a1", "a2", "a3"):
            digests[tag] = await aio_push(client, repo, tag)
            await asyncio.sleep(0.005)
        names = [name async for name in client.list_repository_names(results_per_page=1)]
        assert repo in names
        props = await client.get_repository_properties(repo)
        assert props.tag_count == 3 and props.manifest_count == 3

        pages = []
        async for page in client.list_tag_properties(repo, order_by="timedesc", results_per_page=2).by_page():
            pages.append([tag.name async for tag in page])
        assert pages == [["a3", "a2"], ["a1"]]
        asc = client.list_manifest_properties(repo, order_by=ArtifactManifestOrder.LAST_UPDATED_ON_ASCENDING)
        assert [m.digest async for m in asc] == [digests["a1"], digests["a2"], digests["a3"]]
        manifest = await client.get_manifest_properties(repo, "a1")
        assert manifest.architecture == "arm64" and manifest.tags == ["a1"]
        assert (await client.get_tag_properties(repo, "a2")).digest == digests["a2"]
        assert (await client.get_manifest(repo, "a2")).digest == digests["a2"]

        assert (await client.update_tag_properties(repo, "a1", can_delete=False)).can_delete is False
        with pytest.raises(HttpResponseError) as caught:
            await client.delete_tag(repo, "a1")
        refused(caught.value)
        assert (await client.update_manifest_properties(repo, digests["a2"], can_read=False)).can_read is False
        with pytest.raises(HttpResponseError) as caught:
            await client.get_manifest(repo, digests["a2"])
        refused(caught.value)
        await client.update_manifest_properties(repo, digests["a2"], can_read=True)
        assert (await client.update_repository_properties(repo, can_write=False)).can_write is False
        with pytest.raises(HttpResponseError) as caught:
            await aio_push(client, repo, "a4")
        refused(caught.value)
        await client.update_repository_properties(repo, can_write=True)
        await client.update_tag_properties(repo, "a1", can_delete=True)

        await client.delete_tag(repo, "a3")
        await client.delete_manifest(repo, digests["a3"])
        with pytest.raises(ResourceNotFoundError):
            await client.get_manifest_properties(repo, digests["a3"])
        blob, _ = await client.upload_blob(repo, io.BytesIO(b"loose blob"))
        stream = await client.download_blob(repo, blob)
        assert b"".join([chunk async for chunk in stream]) == b"loose blob"
        await client.delete_blob(repo, blob)
        await client.delete_repository(repo)
        with pytest.raises(ResourceNotFoundError):
            await client.get_repository_properties(repo)
