"""The Azure SDK (`azure-containerregistry`) as an anonymous client of the registry's /v2 API: blob upload
(chunked PATCH + PUT) and download (ranged GETs), manifest set/get, with digest checks on both sides."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from azure.containerregistry import ContainerRegistryClient
from azure.core.pipeline import PipelineRequest
from azure.core.pipeline.policies import SansIOHTTPPolicy

from tests.e2e.clients import OCI_CONFIG, OCI_LAYER_TAR, OCI_MANIFEST, RegistryHttp, sha256_digest


class AllowPlainHttpPolicy(SansIOHTTPPolicy[Any, Any]):
    """Lets the SDK talk to a plain-http (loopback) registry.

    The SDK's challenge policy (and its token-exchange clients) refuse any non-https URL unless the request's
    pipeline context says `enforce_https=False`. The `enforce_https=False` constructor kwarg is ignored, and
    passing it per call does not reach every request (e.g. the internal tag lookups). Instead, this policy is
    installed through azure-core's public `per_call_policies` constructor option: per-call policies run
    before the retry and authentication policies, and the kwargs are forwarded to the SDK's internal
    exchange clients as well, so every request of every pipeline gets `enforce_https=False` in its context
    before the check — no monkeypatching, no private attributes, and TLS stays enforced for any client built
    without it.
    """

    def on_request(self, request: PipelineRequest[Any]) -> None:
        request.context["enforce_https"] = False


@pytest.fixture
def acr_client(registry_url: str) -> Iterator[ContainerRegistryClient]:
    client = ContainerRegistryClient(
        registry_url,
        credential=None,  # anonymous
        audience="https://management.azure.com",
        per_call_policies=[AllowPlainHttpPolicy()],
    )
    with client:
        yield client


def _oci_manifest(config: bytes, layer: bytes) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(config), "size": len(config)},
        "layers": [{"mediaType": OCI_LAYER_TAR, "digest": sha256_digest(layer), "size": len(layer)}],
        "annotations": {"org.example.client": "azure-containerregistry"},
    }


def test_upload_and_download_blob(
    acr_client: ContainerRegistryClient, registry_http: RegistryHttp, repo_name: Callable[[str], str]
) -> None:
    repo = repo_name("blobs")
    # > 4 MiB: the SDK uploads in 4 MiB PATCH chunks and downloads with 4 MiB Range requests.
    data = os.urandom(9 * 1024 * 1024 + 12345)

    digest, size = acr_client.upload_blob(repo, io.BytesIO(data))
    assert digest == sha256_digest(data)
    assert size == len(data)
    assert registry_http.blob_exists(repo, digest)

    stream = acr_client.download_blob(repo, digest)
    hasher = hashlib.sha256()
    received = bytearray()
    for chunk in stream:
        hasher.update(chunk)
        received += chunk
    assert bytes(received) == data
    assert "sha256:" + hasher.hexdigest() == digest

    # A small blob (single chunk, shorter than the first Range request).
    small = b'{"architecture":"amd64","os":"linux"}'
    small_digest, small_size = acr_client.upload_blob(repo, io.BytesIO(small))
    assert (small_digest, small_size) == (sha256_digest(small), len(small))
    assert b"".join(acr_client.download_blob(repo, small_digest)) == small


def test_set_and_get_manifest(
    acr_client: ContainerRegistryClient, registry_http: RegistryHttp, repo_name: Callable[[str], str]
) -> None:
    repo = repo_name("manifests")
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers"}}).encode()
    layer = os.urandom(4096)
    assert acr_client.upload_blob(repo, io.BytesIO(config))[0] == sha256_digest(config)
    assert acr_client.upload_blob(repo, io.BytesIO(layer))[0] == sha256_digest(layer)
    manifest = _oci_manifest(config, layer)

    # The SDK serialises the dict with json.dumps and checks the registry's Docker-Content-Digest against it.
    digest = acr_client.set_manifest(repo, manifest, tag="v1", media_type=OCI_MANIFEST)
    assert digest == sha256_digest(json.dumps(manifest).encode())

    by_tag = acr_client.get_manifest(repo, "v1")
    assert by_tag.digest == digest
    assert by_tag.manifest == manifest
    assert by_tag.media_type == OCI_MANIFEST
    by_digest = acr_client.get_manifest(repo, digest)
    assert by_digest.digest == digest
    assert by_digest.manifest == manifest

    # Untagged, from a stream: pushed by digest; the bytes are stored unchanged.
    raw = json.dumps(manifest, indent=2, sort_keys=True).encode()
    untagged = acr_client.set_manifest(repo, io.BytesIO(raw), media_type=OCI_MANIFEST)
    assert untagged == sha256_digest(raw)
    served = registry_http.get_manifest(repo, untagged)
    assert served.status_code == 200
    assert served.content == raw
    assert acr_client.get_manifest(repo, untagged).manifest == manifest

    # And the blobs the manifest references come back intact through the SDK.
    assert b"".join(acr_client.download_blob(repo, manifest["layers"][0]["digest"])) == layer
    assert b"".join(acr_client.download_blob(repo, manifest["config"]["digest"])) == config
